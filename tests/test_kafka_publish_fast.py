"""The Kafka publish path's fast paths, without a broker (issue 14).

- ``produce`` gets its arguments positionally (cheaper than keywords): the same record;
- ``send_many`` still names each failed item, whatever the order of the reports;
- ``publish_batch`` builds each ``OutgoingMessage`` as the transport reads it, so a batch does
  not keep one per item alive for the collector while it waits for the broker;
- an awaited publish on a known topic runs as the producer's ``send`` coroutine alone (the
  publisher and the transport hand it back instead of awaiting it in frames of their own).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("confluent_kafka")

from unimq_kafka.producer import KafkaProducer
from unimq_kafka.transport import KafkaTransport

from unimq.clock import SystemClock
from unimq.errors import NotConnectedError, PublishError
from unimq.headers import ID
from unimq.publishing import Publisher
from unimq.transport import Capabilities, OutgoingMessage, TransportContext
from unimq.url import BrokerURL


class _Error:
    """What a negative delivery report carries (``KafkaError``'s ``str()``)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def str(self) -> str:
        return self.text


class _Record:
    """A delivery report's message: its headers as librdkafka hands them back (bytes)."""

    def __init__(self, headers: Any) -> None:
        self._headers = [(k, v.encode() if isinstance(v, str) else v) for k, v in headers.items()]

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers


class _FakeClient:
    """``confluent_kafka.Producer.produce`` that keeps each record's callback for the test."""

    def __init__(self) -> None:
        self.produced: list[tuple[Any, Any]] = []  # (headers, callback)

    def produce(self, topic: str, value: bytes, key: Any, *args: Any, **kwargs: Any) -> None:
        if args:  # positional: the producer's order (see test_positional_produce_...)
            _partition, on_delivery, _callback, _timestamp, headers = args
        else:
            headers, on_delivery = kwargs["headers"], kwargs["on_delivery"]
        self.produced.append((headers, on_delivery))


def _producer(client: _FakeClient) -> KafkaProducer:
    producer = KafkaProducer({"bootstrap.servers": "127.0.0.1:1"}, 1_000_000)
    producer._producer = client
    producer._loop = asyncio.get_running_loop()
    return producer


async def _send_and_report(
    count: int, failing: set[int], order: list[int]
) -> tuple[list[BaseException | None], _FakeClient]:
    client = _FakeClient()
    producer = _producer(client)
    items = [("t", b"x", None, {ID: "same"}) for _ in range(count)]  # nothing tells them apart
    task = asyncio.create_task(producer.send_many(items))
    await asyncio.sleep(0)  # send_many produces every item before its first wait
    assert len(client.produced) == len(items)
    for index in order:  # the reports, in the order librdkafka happens to hand them out
        headers, callback = client.produced[index]
        callback(_Error(f"boom {index}") if index in failing else None, _Record(headers))
    producer._flush_reports_now()
    return await asyncio.wait_for(task, 5), client


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_each_failed_item_is_named_whatever_the_report_order(data: st.DataObject) -> None:
    """Identical items, reports in any order, any of them failing: each result is its own
    item's (the reason a batch keeps a callback per item: reports carry no headers)."""
    count = data.draw(st.integers(1, 30))
    failing = data.draw(st.sets(st.integers(0, count - 1)))
    order = data.draw(st.permutations(range(count)))

    results, _ = asyncio.run(_send_and_report(count, failing, list(order)))

    for index, result in enumerate(results):
        if index in failing:
            assert isinstance(result, PublishError)
            assert f"boom {index}" in str(result)
        else:
            assert result is None


class _CountingTransport:
    """A ``publish_many`` transport that counts the live ``OutgoingMessage`` objects once it
    has read every message (and dropped each one)."""

    capabilities = Capabilities(max_delay=None)

    def __init__(self) -> None:
        self.alive_after_reading = -1
        self.read: list[tuple[str, bytes, str | None]] = []

    async def publish(self, message: OutgoingMessage) -> None:  # pragma: no cover - unused
        raise AssertionError("publish_many expected")

    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> list[BaseException | None]:
        for message in messages:
            self.read.append((message.topic, message.body, message.message_id))
        del message
        gc.collect()
        self.alive_after_reading = sum(isinstance(o, OutgoingMessage) for o in gc.get_objects())
        return [None] * len(messages)


async def test_publish_batch_keeps_no_outgoing_message_alive_while_it_waits() -> None:
    transport = _CountingTransport()
    publisher = Publisher(transport, SystemClock())  # type: ignore[arg-type]
    items = [("t", f"b{n}".encode(), {ID: f"i{n}"}, None, f"i{n}", "x", None) for n in range(500)]
    results = await publisher.send_batch(items)
    assert results == [None] * 500
    assert transport.read == [("t", f"b{n}".encode(), f"i{n}") for n in range(500)]
    assert transport.alive_after_reading == 0  # a list of 500 stayed alive before


async def test_an_awaited_kafka_publish_is_the_producer_send_coroutine_alone() -> None:
    """The task of ``await publisher.send_now(...)`` on a known topic: its coroutine chain is
    ``KafkaProducer.send`` and nothing above it (before: the publisher's ``send_now`` and
    the transport's ``publish`` frames as well, each passed through on every resumption)."""
    transport = KafkaTransport(
        BrokerURL.parse("kafka://127.0.0.1:1"), {}, TransportContext(SystemClock(), "t")
    )
    gate = asyncio.Event()

    class Admin:
        def known(self, topic: str) -> bool:
            return True

    class Producer:
        async def send(self, topic: str, value: bytes, key: Any, headers: Any) -> None:
            await gate.wait()

    transport._admin, transport._producer = Admin(), Producer()  # type: ignore[assignment]
    transport._connected = True
    publisher = Publisher(transport, SystemClock())

    async def publish() -> None:
        await publisher.send_now("t", b"x", {ID: "m"}, None, "m", "application/octet-stream")

    task = asyncio.create_task(publish())
    await asyncio.sleep(0)
    chain = []
    awaited: Any = task.get_coro().cr_await
    while awaited is not None and hasattr(awaited, "cr_code"):
        chain.append(awaited.cr_code.co_qualname)
        awaited = awaited.cr_await
    gate.set()
    await task
    # the fake producer's send, then the gate it waits on: nothing of unimq's above it
    assert [name.rsplit(".", 2)[-2:] for name in chain] == [["Producer", "send"], ["Event", "wait"]]


async def test_a_publish_on_an_unconnected_kafka_transport_still_says_so() -> None:
    transport = KafkaTransport(
        BrokerURL.parse("kafka://127.0.0.1:1"), {}, TransportContext(SystemClock(), "t")
    )
    with pytest.raises(NotConnectedError):
        await transport.publish(OutgoingMessage("t", b"x", {}))


def test_positional_produce_is_the_keyword_form() -> None:
    """The producer passes ``produce``'s arguments positionally (cheaper than keywords): the
    record and its report are those of the keyword form (no broker: the reports are the
    timeouts, which carry the record back)."""
    import time

    import confluent_kafka
    from unimq_kafka.producer import _ANY, _NOW

    client = confluent_kafka.Producer(
        {"bootstrap.servers": "127.0.0.1:1", "message.timeout.ms": 200, "log_level": 0}
    )
    reports: dict[str, Any] = {}

    def callback(name: str) -> Any:
        return lambda error, message: reports.__setitem__(name, (error, message))

    headers = {"a": "1", ID: "m"}
    client.produce("t", b"v", b"k", headers=headers, on_delivery=callback("keyword"))
    client.produce("t", b"v", b"k", _ANY, callback("positional"), None, _NOW, headers)
    client.produce("t", b"w", None, _ANY, callback("bare"), None, _NOW, None)
    deadline = time.monotonic() + 10
    while len(reports) < 3 and time.monotonic() < deadline:
        client.poll(0.05)
    (_, keyword), (_, positional), (_, bare) = (
        reports[n] for n in ("keyword", "positional", "bare")
    )
    for message in (keyword, positional):
        assert (message.topic(), message.value(), message.key()) == ("t", b"v", b"k")
    assert positional.partition() == keyword.partition()
    assert positional.timestamp()[0] == keyword.timestamp()[0]
    assert (bare.value(), bare.key(), bare.headers()) == (b"w", None, None)


def test_delivery_reports_carry_no_headers() -> None:
    """Why a batch cannot share one delivery-report callback and find a failed item by its
    ``unimq-id``: confluent-kafka's report hands back the value and key, not the headers. If
    this starts failing, a newer client exposes them and the shared callback becomes possible."""
    import time

    import confluent_kafka

    client = confluent_kafka.Producer(
        {"bootstrap.servers": "127.0.0.1:1", "message.timeout.ms": 200, "log_level": 0}
    )
    reports: list[Any] = []
    client.produce("t", b"v", b"k", headers={ID: "m"}, on_delivery=lambda e, m: reports.append(m))
    deadline = time.monotonic() + 10
    while not reports and time.monotonic() < deadline:
        client.poll(0.05)
    assert reports[0].value() == b"v"
    assert reports[0].headers() is None
