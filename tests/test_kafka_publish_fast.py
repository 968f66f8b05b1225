"""The Kafka publish path's fast paths, without a broker (issue 14).

- ``send_many`` hands every item of a batch one shared delivery-report callback when their
  ``unimq-id`` headers are all different, and still says which items failed (found by that
  header), wherever the failed reports come in the order;
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

    def produce(
        self, topic: str, value: bytes, key: Any, *, headers: Any, on_delivery: Any
    ) -> None:
        self.produced.append((headers, on_delivery))


def _producer(client: _FakeClient) -> KafkaProducer:
    producer = KafkaProducer({"bootstrap.servers": "127.0.0.1:1"}, 1_000_000)
    producer._producer = client
    producer._loop = asyncio.get_running_loop()
    return producer


async def _send_and_report(
    ids: list[str], failing: set[int], order: list[int]
) -> tuple[list[BaseException | None], _FakeClient]:
    client = _FakeClient()
    producer = _producer(client)
    items = [("t", b"x", None, {ID: message_id, "n": str(n)}) for n, message_id in enumerate(ids)]
    task = asyncio.create_task(producer.send_many(items, ids))
    while len(client.produced) < len(items):  # noqa: ASYNC110 - produce() is not awaitable
        await asyncio.sleep(0)
    for index in order:  # the reports, in the order librdkafka happens to hand them out
        headers, callback = client.produced[index]
        callback(_Error(f"boom {index}") if index in failing else None, _Record(headers))
    producer._flush_reports_now()
    return await asyncio.wait_for(task, 5), client


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_one_shared_callback_still_names_each_failed_item(data: st.DataObject) -> None:
    count = data.draw(st.integers(1, 30))
    failing = data.draw(st.sets(st.integers(0, count - 1)))
    order = data.draw(st.permutations(range(count)))
    ids = [f"id-{n}" for n in range(count)]

    results, client = asyncio.run(_send_and_report(ids, failing, list(order)))

    assert len({id(callback) for _, callback in client.produced}) == 1  # one for the batch
    for index, result in enumerate(results):
        if index in failing:
            assert isinstance(result, PublishError)
            assert f"boom {index}" in str(result)
        else:
            assert result is None


async def test_a_repeated_id_gives_each_item_its_own_callback() -> None:
    """Two items with the same id could not be told apart by a failed report's header."""
    results, client = await _send_and_report(["same", "same", "other"], {1}, [2, 1, 0])
    assert len({id(callback) for _, callback in client.produced}) == 3
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], PublishError)


async def test_real_failed_reports_carry_the_id_that_names_their_item() -> None:
    """librdkafka's own failed reports (no broker: every message times out) hand back the
    headers the shared callback looks the item up by."""
    producer = KafkaProducer(
        {"bootstrap.servers": "127.0.0.1:1", "message.timeout.ms": 300, "log_level": 0},
        1_000_000,
    )
    producer.start(asyncio.get_running_loop())
    try:
        ids = [f"id-{n}" for n in range(5)]
        items = [("t", str(n).encode(), None, {ID: ids[n]}) for n in range(5)]
        results = await asyncio.wait_for(producer.send_many(items, ids), 10)
        assert all(isinstance(r, PublishError) for r in results)
        assert producer._may_poll.is_set()
    finally:
        await producer.close(timeout=1)


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
