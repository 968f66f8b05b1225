"""The OpenTelemetry plugin: one connected trace per message, across retries, DLQ and replay."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from unimq_otel import OpenTelemetryTracing

from unimq import Broker, Message, Reject, RetryPolicy, fixed
from unimq.dlq import DeadLetterQueue
from unimq.testing import VirtualClock
from unimq.testing.conformance import Collector


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.clear()


def traced_broker(exporter: InMemorySpanExporter) -> Broker:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return OpenTelemetryTracing(tracer_provider=provider).instrument(Broker("memory://"))


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def test_publish_retry_success_is_one_connected_trace(
    exporter: InMemorySpanExporter,
) -> None:
    broker = traced_broker(exporter)
    done = Collector()

    @broker.subscriber("orders", group="billing", retry=RetryPolicy(3, backoff=fixed(0.01)))
    async def bill(message: Message) -> None:
        if message.attempt == 1:
            raise ConnectionError("payment gateway down")
        done.add(message.attempt)

    async with broker:
        await broker.publish("orders", b"o-1", key="c-7")
        await done.wait_for(1)
        await broker.drain()

    spans = exporter.get_finished_spans()
    [send] = by_name(spans, "send orders")
    [retry] = by_name(spans, "retry orders")
    first, second = sorted(by_name(spans, "process orders"), key=lambda s: s.start_time or 0)
    assert {s.context.trace_id for s in spans} == {send.context.trace_id}, "one trace"
    assert send.kind == SpanKind.PRODUCER and send.parent is None
    assert first.kind == SpanKind.CONSUMER and parent_of(first) == send.context.span_id
    assert first.status.status_code == StatusCode.ERROR
    assert first.attributes is not None and first.attributes["unimq.attempt"] == 1
    assert parent_of(retry) == send.context.span_id
    assert parent_of(second) == retry.context.span_id
    assert second.attributes is not None and second.attributes["unimq.attempt"] == 2
    assert second.status.status_code != StatusCode.ERROR
    assert len(spans) == 4


async def test_trace_survives_the_dead_letter_queue_and_replay(
    exporter: InMemorySpanExporter,
) -> None:
    broker = traced_broker(exporter)
    done = Collector()
    healthy = {"value": False}

    @broker.subscriber("orders", group="billing")
    async def bill(message: Message) -> None:
        if not healthy["value"]:
            raise Reject("no such customer")
        done.add(message.id)

    async with broker:
        await broker.publish("orders", b"o-2")
        dlq = DeadLetterQueue(broker, "orders.billing.dlq")
        await broker.drain()
        assert await dlq.count() == 1
        healthy["value"] = True
        await dlq.replay()
        await done.wait_for(1)
        await broker.drain()

    spans = exporter.get_finished_spans()
    [send] = by_name(spans, "send orders")
    [dead] = by_name(spans, "dead-letter orders")
    [replay] = by_name(spans, "replay orders")
    first, second = sorted(by_name(spans, "process orders"), key=lambda s: s.start_time or 0)
    assert {s.context.trace_id for s in spans} == {send.context.trace_id}, "one trace"
    assert parent_of(first) == send.context.span_id
    assert parent_of(dead) == send.context.span_id
    assert parent_of(replay) == dead.context.span_id
    assert parent_of(second) == replay.context.span_id


async def test_publishing_from_a_handler_continues_its_trace(
    exporter: InMemorySpanExporter,
) -> None:
    broker = traced_broker(exporter)
    done = Collector()

    @broker.subscriber("orders", group="shipping")
    async def ship(message: Message) -> None:
        await broker.publish("shipments", message.body)

    @broker.subscriber("shipments", group="notify")
    async def notify(message: Message) -> None:
        done.add(message.id)

    async with broker:
        await broker.publish("orders", b"o-3")
        await done.wait_for(1)
        await broker.drain()

    spans = exporter.get_finished_spans()
    assert len({s.context.trace_id for s in spans}) == 1
    [process_order] = by_name(spans, "process orders")
    [send_shipment] = by_name(spans, "send shipments")
    assert parent_of(send_shipment) == process_order.context.span_id


async def test_a_delayed_message_keeps_its_trace(exporter: InMemorySpanExporter) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    clock = VirtualClock()
    broker = OpenTelemetryTracing(tracer_provider=provider).instrument(
        Broker("memory://", clock=clock)
    )
    done = Collector()

    @broker.subscriber("orders.unpaid", group="payments")
    async def close_unpaid(message: Message) -> None:
        done.add(message.id)

    async with broker:
        await broker.publish("orders.unpaid", b"o-4", delay=30 * 60)
        await clock.advance(30 * 60)
        await done.wait_for(1)
        await broker.drain()

    spans = exporter.get_finished_spans()
    [send] = by_name(spans, "send orders.unpaid")
    [process] = by_name(spans, "process orders.unpaid")
    assert parent_of(process) == send.context.span_id
    assert process.context.trace_id == send.context.trace_id
