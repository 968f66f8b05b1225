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


# -- publish_batch of plain bodies as columns (SupportsPublishBodies) ------------------------


class _WireClient:
    """``Producer.produce`` that records each record as it goes on the wire (the headers as
    they are at the call: ``produce()`` copies them) and its callback; it raises
    ``BufferError`` on the first try of the records in ``full`` and refuses those in
    ``refused``, as librdkafka does when its queue is full or a record is invalid."""

    def __init__(self, full: set[int] = frozenset(), refused: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.records: list[tuple[Any, ...]] = []
        self.callbacks: list[Any] = []
        self.full, self.refused = set(full), set(refused)
        self.calls = 0

    def produce(self, *args: Any) -> None:
        topic, value, key, partition, on_delivery, callback, timestamp, headers = args
        attempt = self.calls
        self.calls += 1
        if attempt in self.full:
            self.full.discard(attempt)
            raise BufferError("queue full (injected)")
        wire = list(headers.items()) if isinstance(headers, dict) else headers
        record = (topic, value, key, partition, callback, timestamp, wire)
        if attempt in self.refused:
            raise ValueError(f"refused (injected) {attempt}")
        self.records.append(record)
        self.callbacks.append(on_delivery)


def _kafka_publisher(client: Any) -> Publisher:
    transport = KafkaTransport(
        BrokerURL.parse("kafka://127.0.0.1:1"), {}, TransportContext(SystemClock(), "t")
    )

    class Admin:
        def known(self, topic: str) -> bool:
            return True

    transport._admin = Admin()  # type: ignore[assignment]
    transport._producer = _producer(client)
    transport._connected = True
    return Publisher(transport, SystemClock())


async def _until(condition: Any) -> None:
    """Let the loop run (a full queue makes the producer sleep 5 ms) until ``condition()``."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("timed out")


async def _through(
    publisher: Publisher, items: Any, client: Any, failing: set[int]
) -> list[BaseException | None]:
    calls = len(items) + len(client.full)  # one per record, one more per full queue
    task = asyncio.create_task(publisher.send_batch(items))
    await _until(lambda: task.done() or client.calls >= calls)
    for number, callback in enumerate(client.callbacks):
        callback(_Error(f"boom {number}") if number in failing else None, None)
    producer = publisher.transport._producer  # type: ignore[attr-defined]
    producer._flush_reports_now()
    return await asyncio.wait_for(task, 5)


_texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)


@settings(max_examples=40, deadline=None)
@given(
    bodies=st.one_of(
        st.lists(st.binary(max_size=8), min_size=1, max_size=12),
        st.lists(_texts, min_size=1, max_size=12),
        st.lists(st.dictionaries(_texts, st.integers(), max_size=2), min_size=1, max_size=12),
    ),
    key=st.none() | _texts.filter(bool),
    headers=st.none() | st.dictionaries(_texts.filter(bool), _texts, max_size=3),
    data=st.data(),
)
def test_a_body_batch_puts_the_records_of_the_general_path_on_the_wire(
    bodies: list[Any], key: str | None, headers: dict[str, str] | None, data: st.DataObject
) -> None:
    """``publish_batch``'s column path (``publish_bodies`` -> ``send_each``, one headers dict
    with the id swapped in) sends, record for record, what the general path
    (``publish_many`` -> ``send_many``) sends for the same items, NUL characters in the
    user's headers included, and gives the same result per item when reports fail, the
    queue is full or a record is refused."""
    from unimq.batch_prepare import BodyBatch, prepare_bodies

    if headers is not None and any(name.startswith("unimq-") for name in headers):
        return  # refused before anything is sent, by both paths alike
    count = len(bodies)
    failing = data.draw(st.sets(st.integers(0, count - 1)), label="failing reports")
    full = data.draw(st.sets(st.integers(0, count - 1)), label="queue full at call")
    refused = data.draw(st.sets(st.integers(0, count - 1)), label="refused at call")

    async def run() -> None:
        batch = prepare_bodies("t", bodies, key, headers, SystemClock().now, False, columns=True)
        assert isinstance(batch, BodyBatch)
        fast_client = _WireClient(full, refused)
        fast_publisher = _kafka_publisher(fast_client)
        assert fast_publisher.takes_columns
        fast = await _through(fast_publisher, batch, fast_client, failing)
        general_client = _WireClient(full, refused)
        general = await _through(
            _kafka_publisher(general_client), list(batch), general_client, failing
        )
        assert fast_client.records == general_client.records
        assert [str(r) if r else r for r in fast] == [str(r) if r else r for r in general]
        lost = {n for n, result in enumerate(fast) if "refused (injected)" in str(result)}
        assert len(lost) == len(refused - full)  # a full queue comes first at its call
        wire_ids = [dict(record[-1])[ID] for record in fast_client.records]
        assert wire_ids == [mid for n, mid in enumerate(batch.ids) if n not in lost]

    asyncio.run(run())


@settings(max_examples=40, deadline=None)
@given(
    bodies=st.one_of(
        st.lists(st.binary(max_size=4), max_size=8),
        st.lists(st.one_of(st.binary(max_size=4), _texts, st.integers()), max_size=8),
    ),
    key=st.none() | _texts.filter(bool),
    headers=st.none() | st.dictionaries(_texts.filter(bool), _texts, max_size=3),
)
def test_a_body_batch_read_as_items_is_what_prepare_bodies_builds(
    bodies: list[Any], key: str | None, headers: dict[str, str] | None
) -> None:
    """A :class:`BodyBatch` read as a sequence is the ``Prepared`` list ``prepare_bodies``
    builds without columns (same ids: uuid7 made deterministic), headers in the same order;
    mixed content types give that list itself."""
    from unittest import mock

    import uuid_utils

    from unimq.batch_prepare import BodyBatch, prepare_bodies
    from unimq.errors import UnimqError

    def prepared(columns: bool) -> Any:
        numbers = iter(range(1, 1000))
        with mock.patch.object(uuid_utils, "uuid7", lambda: f"id-{next(numbers)}"):
            try:
                return prepare_bodies(
                    "t", bodies, key, headers, lambda: 1.5, False, columns=columns
                )
            except UnimqError as exc:
                return str(exc)

    general, columns = prepared(False), prepared(True)
    if isinstance(columns, BodyBatch):
        assert len({content_type for _, _, _, _, _, content_type, _ in general}) == 1
        columns = list(columns)
        assert [list(item[2].items()) for item in columns] == [
            list(item[2].items()) for item in general
        ]
    assert columns == general


async def test_publish_batch_receipts_and_failures_through_the_columns() -> None:
    """``Broker.publish_batch`` of bodies on a ``SupportsPublishBodies`` transport: one receipt
    per item, in order, with the id each record carries; a failed report makes
    ``PublishBatchError`` name exactly the unconfirmed items, the others keep their receipts."""
    from unimq import Broker, PublishBatchError

    client = _WireClient()
    publisher = _kafka_publisher(client)
    producer = publisher.transport._producer  # type: ignore[attr-defined]

    async def publish_batch(bodies: list[bytes], failing: set[int], **options: Any) -> Any:
        client.records.clear()
        client.callbacks.clear()
        task = asyncio.create_task(broker.publish_batch("t", bodies, **options))
        await _until(lambda: len(client.callbacks) == len(bodies))
        for number, callback in enumerate(client.callbacks):
            callback(_Error("boom") if number in failing else None, None)
        producer._flush_reports_now()
        return await asyncio.wait_for(task, 5)

    broker = Broker("memory://")
    async with broker:
        broker.publisher = publisher
        receipts = await publish_batch([b"a", b"b", b"a"], set(), key="k")
        assert [r.message_id for r in receipts] == [dict(r[-1])[ID] for r in client.records]
        assert [(r.topic, r.deliver_at) for r in receipts] == [("t", None)] * 3
        assert len({r.message_id for r in receipts}) == 3
        assert [r[2] for r in client.records] == [b"k"] * 3
        with pytest.raises(PublishBatchError) as caught:
            await publish_batch([b"x"] * 5, {1, 4})
    assert sorted(caught.value.failures) == [1, 4]
    receipts = caught.value.receipts
    assert [r is not None for r in receipts] == [True, False, True, True, False]
    assert [r.message_id for r in receipts if r is not None] == [
        dict(record[-1])[ID] for n, record in enumerate(client.records) if n not in (1, 4)
    ]


async def test_a_body_batch_allocates_one_tracked_object_per_item() -> None:
    """Queuing a batch allocates, per item, one object the collector tracks: the item's
    delivery-report callback, which librdkafka holds until the report. No headers ``dict``
    per record (one is filled in per record), no tuple per item, no ``partial`` (whose
    argument tuple is tracked too). Each tracked allocation brings the next young collection
    closer, and those collections scan the callbacks still waiting again and again. The
    general path (``publish_many``) allocates about three per item: 59 young collections for
    these 14,000 items, against 20 for the threshold of 700."""
    from unimq.batch_prepare import prepare_bodies

    class Client:
        def __init__(self) -> None:
            self.callbacks: list[Any] = []

        def produce(self, *args: Any) -> None:
            self.callbacks.append(args[4])

    client = Client()
    publisher = _kafka_publisher(client)
    count = 14_000
    batch = prepare_bodies("t", [b"x"] * count, None, None, SystemClock().now, False, columns=True)
    young: list[int] = []

    def collected(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and len(client.callbacks) < count:
            young.append(info["generation"])

    gc.collect()
    gc.callbacks.append(collected)
    try:
        task = asyncio.create_task(publisher.send_batch(batch))
        await _until(lambda: len(client.callbacks) == count)
    finally:
        gc.callbacks.remove(collected)
    for callback in client.callbacks:
        callback(None, None)
    publisher.transport._producer._flush_reports_now()  # type: ignore[attr-defined]
    assert await asyncio.wait_for(task, 5) == [None] * count
    threshold = gc.get_threshold()[0]
    assert len(young) <= 1.3 * count / threshold + 3, (len(young), count / threshold)


async def test_a_body_batch_too_large_names_its_first_large_item_and_sends_nothing() -> None:
    """The column path checks every body's size before anything is sent, and names the first
    body too large, as the per-item check of the general path does."""
    from unimq.batch_prepare import prepare_bodies
    from unimq.errors import MessageTooLargeError

    client = _WireClient()
    publisher = _kafka_publisher(client)
    limit = publisher._max_size
    assert limit is not None
    bodies = [b"a", b"b" * (limit + 1), b"c" * (limit + 2)]
    batch = prepare_bodies("t", bodies, None, None, SystemClock().now, False, columns=True)
    with pytest.raises(MessageTooLargeError, match=f"is {limit + 1} bytes"):
        await publisher.send_batch(batch)
    with pytest.raises(MessageTooLargeError, match=f"is {limit + 1} bytes"):
        await publisher.send_batch(list(batch))
    assert client.calls == 0
