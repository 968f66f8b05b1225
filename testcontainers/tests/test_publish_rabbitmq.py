"""Confirmed publishing on a real RabbitMQ: the batched write path (``unimq_rabbitmq.confirms``).

The conformance suite proves that published messages arrive; these cases pin what batching
could get wrong: a return matched to the right publish inside a batch, a withdrawn publish never
sent, order kept while the connection's write queue is full, and a connection lost mid-flight
reported as ``PublishError`` (never as a cancellation of the caller) with every confirmed
message queued, a message that cannot be encoded failing alone (never shifting the delivery tags
of the others), and a broker that blocks publishers failing a publish after ``publish_timeout``.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import pytest
from aiormq.abc import ChannelFrame
from pamqp.commands import Basic
from pamqp.heartbeat import Heartbeat
from unimq_rabbitmq.confirms import ConfirmBatcher, supported

from unimq import BatchPolicy, Broker, Message, PublishError
from unimq.errors import EncodeError
from unimq.transport import OutgoingMessage

pytestmark = pytest.mark.realbroker


def unique(name: str) -> str:
    return f"publish.{uuid.uuid4().hex[:8]}.{name}"


def persistent() -> Basic.Properties:
    return Basic.Properties(delivery_mode=2)


async def declare_group(url: str, topic: str, group: str) -> None:
    """Declare the group's queue the way a service does: start a subscriber once."""
    broker = Broker(url)

    @broker.subscriber(topic, group=group)
    async def handle(message: Message) -> None: ...

    await broker.connect()
    await broker.start()
    await broker.stop()


async def queued(url: str, queue: str) -> list[bytes]:
    """Every message in ``queue``, in queue order (taken and acked)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        bodies = []
        while (message := await declared.get(no_ack=True, fail=False)) is not None:
            bodies.append(message.body)
        return bodies


async def test_returns_inside_a_batch_fail_only_the_unroutable_publishes(
    rabbitmq_broker: Any,
) -> None:
    topic, group, nowhere = unique("routed"), "g", unique("nowhere")
    await declare_group(rabbitmq_broker.url, topic, group)
    async with Broker(rabbitmq_broker.url) as producer:
        sends = [producer.publish(topic, f"ok-{i}".encode()) for i in range(40)]
        sends[5:5] = [producer.publish(nowhere, f"lost-{i}".encode()) for i in range(5)]
        results = await asyncio.gather(*sends, return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 5, results
    assert all(isinstance(r, PublishError) and "no queue is bound" in str(r) for r in failed)
    assert failed == results[5:10]
    assert sorted(await queued(rabbitmq_broker.url, f"{topic}::{group}")) == sorted(
        f"ok-{i}".encode() for i in range(40)
    )


@asynccontextmanager
async def batcher_for(url: str, queue: str) -> AsyncIterator[ConfirmBatcher]:
    """A batcher on a fresh confirming channel, with a durable queue ``queue`` declared."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue, durable=True)
        underlay = await channel.get_underlay_channel()
        assert supported(underlay)
        yield ConfirmBatcher(underlay)


def publish_to(batcher: ConfirmBatcher, queue: str, body: bytes) -> asyncio.Future[Any]:
    """Through the default exchange, straight to ``queue``."""
    return batcher.publish(
        body, exchange="", routing_key=queue, properties=persistent(), mandatory=True
    )


async def test_a_publish_cancelled_before_its_flush_is_never_sent(rabbitmq_broker: Any) -> None:
    queue = unique("withdrawn")
    async with batcher_for(rabbitmq_broker.url, queue) as batcher:
        withdrawn = publish_to(batcher, queue, b"withdrawn")
        withdrawn.cancel()
        assert isinstance(await publish_to(batcher, queue, b"kept"), Basic.Ack)
    assert await queued(rabbitmq_broker.url, queue) == [b"kept"]


async def test_a_full_write_queue_holds_batches_back_in_order(rabbitmq_broker: Any) -> None:
    queue = unique("ordered")
    async with batcher_for(rabbitmq_broker.url, queue) as batcher:
        underlay = batcher.channel
        # Put a full one-slot queue between the batcher and the connection's writer.
        writer_queue = underlay.write_queue
        gate: asyncio.Queue[ChannelFrame] = asyncio.Queue(maxsize=1)
        gate.put_nowait(ChannelFrame.marshall(channel_number=0, frames=[Heartbeat()]))
        underlay.write_queue = gate

        def publish(i: int) -> asyncio.Future[Any]:
            return publish_to(batcher, queue, str(i).encode())

        confirmations = [publish(i) for i in range(50)]
        await asyncio.sleep(0)  # the first flush finds the queue full and waits
        confirmations += [publish(i) for i in range(50, 100)]
        await asyncio.sleep(0.2)
        assert not any(c.done() for c in confirmations), "sent although the queue was full"

        async def forward() -> None:
            while True:
                await writer_queue.put(await gate.get())

        forwarder = asyncio.create_task(forward())
        try:
            answers = await asyncio.wait_for(asyncio.gather(*confirmations), 30)
        finally:
            forwarder.cancel()
            underlay.write_queue = writer_queue
        assert all(isinstance(a, Basic.Ack) for a in answers)
    assert await queued(rabbitmq_broker.url, queue) == [str(i).encode() for i in range(100)]


async def test_a_connection_lost_mid_flight_fails_publishes_with_publish_error(
    rabbitmq_broker: Any,
) -> None:
    """RabbitMQ drops the connection under 64 publishes in flight: those fail with
    ``PublishError`` (the caller may retry), every confirmed one is queued, publishing resumes."""
    if not rabbitmq_broker.can_control:
        pytest.skip("external broker: cannot drop its connections")
    topic, group = unique("lost"), "g"
    await declare_group(rabbitmq_broker.url, topic, group)
    confirmed: list[bytes] = []
    failures: list[BaseException] = []
    stop = asyncio.Event()
    counter = iter(range(10**9))
    async with Broker(rabbitmq_broker.url, publish_window=64) as producer:

        async def keep_publishing() -> None:
            while not stop.is_set():
                body = str(next(counter)).encode()
                try:
                    await producer.publish(topic, body)
                    confirmed.append(body)
                except BaseException as exc:  # a CancelledError here is the bug tested for
                    failures.append(exc)
                    await asyncio.sleep(0.05)

        publishers = [asyncio.create_task(keep_publishing()) for _ in range(64)]
        await asyncio.sleep(0.5)
        code, out, err = await asyncio.to_thread(
            rabbitmq_broker.exec,
            ["rabbitmqctl", "close_all_connections", "unimq test: connection lost"],
        )
        assert code == 0, (out, err)
        await asyncio.sleep(0.5)
        before = len(confirmed)
        deadline = asyncio.get_running_loop().time() + 30
        while len(confirmed) < before + 500:  # publishing resumed after the reconnect
            assert asyncio.get_running_loop().time() < deadline, "publishing did not resume"
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*publishers), 60)
    assert failures, "dropping the connection under 64 publishes in flight failed none of them"
    assert not [f for f in failures if not isinstance(f, PublishError)], failures[:3]
    queued_bodies = set(await queued(rabbitmq_broker.url, f"{topic}::{group}"))
    assert set(confirmed) <= queued_bodies, "a confirmed publish is missing from the queue"


async def test_closing_under_publishes_in_flight_fails_them_at_once(rabbitmq_broker: Any) -> None:
    """Closing the transport rejects the pending confirmations by cancelling them: callers get
    ``PublishError`` at once, never a ``CancelledError`` they did not ask for, nor a wait for a
    reconnect that will not come."""
    topic, group = unique("closing"), "g"
    await declare_group(rabbitmq_broker.url, topic, group)
    producer = Broker(rabbitmq_broker.url, publish_window=64)
    await producer.connect()
    publishes = [asyncio.create_task(producer.publish(topic, b"x")) for _ in range(300)]
    await asyncio.sleep(0.01)
    await producer.transport.close()
    started = asyncio.get_running_loop().time()
    results = await asyncio.wait_for(asyncio.gather(*publishes, return_exceptions=True), 10)
    assert asyncio.get_running_loop().time() - started < 5
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors, "closing under 300 publishes failed none of them"
    assert all(isinstance(e, PublishError) for e in errors), {repr(e) for e in errors}


async def test_every_batched_ack_is_written_before_the_broker_stops(rabbitmq_broker: Any) -> None:
    """Acks are queued and written once per loop turn: stopping right after the last handler
    returned must still settle every message (none back in the queue for redelivery)."""
    topic, group, count = unique("acks"), "g", 2000
    consumer = Broker(rabbitmq_broker.url)
    handled = 0
    done = asyncio.Event()

    @consumer.subscriber(topic, group=group, concurrency=64)
    async def handle(message: Message) -> None:
        nonlocal handled
        handled += 1
        if handled == count:
            done.set()

    await consumer.connect()
    await consumer.start()
    async with Broker(rabbitmq_broker.url) as producer:
        await asyncio.gather(*(producer.publish(topic, str(i).encode()) for i in range(count)))
    await asyncio.wait_for(done.wait(), 60)
    await consumer.stop()
    assert handled == count
    assert await queued(rabbitmq_broker.url, f"{topic}::{group}") == []


async def test_large_messages_are_written_at_once_and_in_order(rabbitmq_broker: Any) -> None:
    """Pending bytes past ``FLUSH_BYTES`` are written without waiting for the end of the loop
    turn, so a batch of large bodies is never copied into one buffer; order is unchanged."""
    queue = unique("large")
    bodies = [
        (str(i).encode() + b":").ljust(200 * 1024 if i % 3 == 0 else 100, b"x") for i in range(12)
    ]
    async with batcher_for(rabbitmq_broker.url, queue) as batcher:
        writes = batcher.channel.write_queue.qsize()
        confirmations = [publish_to(batcher, queue, body) for body in bodies[:4]]
        # Within one loop turn: [0] (200 KiB) went to the writer at once, then [1, 2, 3] with
        # the next 200 KiB body; nothing waits for the end of the turn.
        assert batcher.channel.write_queue.qsize() == writes + 2
        confirmations += [publish_to(batcher, queue, body) for body in bodies[4:]]
        answers = await asyncio.wait_for(asyncio.gather(*confirmations), 30)
        assert all(isinstance(a, Basic.Ack) for a in answers)
    assert await queued(rabbitmq_broker.url, queue) == bodies


def outgoing(topic: str, body: bytes, **fields: Any) -> OutgoingMessage:
    return OutgoingMessage(topic, body, fields.pop("headers", {}), **fields)


UNENCODABLE = {
    "surrogate header value": {"headers": {"h": "\udc80"}},
    "surrogate header name": {"headers": {"\ud800": "v"}},
    "surrogate key": {"key": "k\udfff"},
    "message id over 255 bytes": {"message_id": "i" * 256},
}


async def test_unencodable_publishes_in_a_batch_fail_alone(rabbitmq_broker: Any) -> None:
    """Messages pamqp cannot encode, published in the same loop turn as good ones: each fails
    on its own with ``EncodeError``; every good one is confirmed and queued, in order, and the
    confirms of later batches still match their own messages."""
    topic, group = unique("unencodable"), "g"
    await declare_group(rabbitmq_broker.url, topic, group)
    async with Broker(rabbitmq_broker.url) as producer:
        transport = producer.transport
        good: list[bytes] = []
        sends = []
        for i in range(40):
            if i % 5 == 2:
                kind = sorted(UNENCODABLE)[(i // 5) % len(UNENCODABLE)]
                sends.append(transport.publish(outgoing(topic, b"bad", **UNENCODABLE[kind])))
            else:
                good.append(f"ok-{i}".encode())
                sends.append(transport.publish(outgoing(topic, good[-1], headers={"n": "1"})))
        results = await asyncio.wait_for(asyncio.gather(*sends, return_exceptions=True), 30)
        refused = [r for r in results if isinstance(r, BaseException)]
        assert len(refused) == 8, results
        assert all(isinstance(r, EncodeError) for r in refused), refused
        # The batches after it: every confirm still belongs to its own message.
        later = [f"later-{i}".encode() for i in range(40)]
        await asyncio.wait_for(
            asyncio.gather(*(transport.publish(outgoing(topic, body)) for body in later)), 30
        )
    assert await queued(rabbitmq_broker.url, f"{topic}::{group}") == good + later


async def test_a_broker_blocking_publishers_fails_publish_within_publish_timeout(
    rabbitmq_broker: Any,
) -> None:
    """A memory alarm makes RabbitMQ block publishing connections: a publish then fails with
    ``PublishError`` after ``publish_timeout`` instead of waiting for ever, and publishing works
    again once the alarm clears."""
    if not rabbitmq_broker.can_control:
        pytest.skip("external broker: cannot raise a memory alarm")
    topic, group = unique("blocked"), "g"
    await declare_group(rabbitmq_broker.url, topic, group)

    async def watermark(value: str) -> None:
        code, out, err = await asyncio.to_thread(
            rabbitmq_broker.exec, ["rabbitmqctl", "set_vm_memory_high_watermark", value]
        )
        assert code == 0, (out, err)

    async with Broker(rabbitmq_broker.url, publish_timeout=3) as producer:
        await producer.publish(topic, b"before")
        await watermark("0")
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(PublishError, match="publish_timeout"):
                await asyncio.wait_for(producer.publish(topic, b"blocked"), 20)
            assert loop.time() - started < 6
        finally:
            await watermark("0.4")
        await asyncio.wait_for(producer.publish(topic, b"after"), 20)
    bodies = await queued(rabbitmq_broker.url, f"{topic}::{group}")
    # The timed-out message was written before the broker blocked the connection: it may be
    # stored once the alarm clears (the error says so).
    assert bodies in ([b"before", b"after"], [b"before", b"blocked", b"after"])


async def test_publish_many_fails_only_its_bad_messages_and_keeps_the_window(
    rabbitmq_broker: Any,
) -> None:
    """``publish_many`` (``publish_batch``'s path) with a window smaller than the batch: every
    good message is confirmed and queued in order, each bad one gets its own error, and the
    window's slots all come back (a later publish does not wait for a slot)."""
    topic, group = unique("many"), "g"
    await declare_group(rabbitmq_broker.url, topic, group)
    async with Broker(rabbitmq_broker.url, publish_window=4) as producer:
        transport: Any = producer.transport
        good: list[bytes] = []
        messages = []
        for i in range(60):
            if i % 7 == 3:
                kind = sorted(UNENCODABLE)[i % len(UNENCODABLE)]
                messages.append(outgoing(topic, b"bad", **UNENCODABLE[kind]))
            else:
                good.append(f"ok-{i}".encode())
                messages.append(outgoing(topic, good[-1]))
        results = await asyncio.wait_for(transport.publish_many(messages), 30)
        assert [i for i, r in enumerate(results) if r is not None] == [
            i for i in range(60) if i % 7 == 3
        ]
        assert all(isinstance(r, EncodeError) for r in results if r is not None), results
        assert transport._window.free == 4
        unroutable = await transport.publish_many([outgoing(unique("nobody"), b"x")])
        assert isinstance(unroutable[0], PublishError), unroutable
    assert await queued(rabbitmq_broker.url, f"{topic}::{group}") == good


async def test_batch_acks_out_of_order_settle_every_message_once(rabbitmq_broker: Any) -> None:
    """Batches finish out of order and their acks go out as multiple acks where safe: every
    message is handled once (a wrong multiple ack would close the channel and RabbitMQ would
    redeliver) and none is left in the queue."""
    topic, group, count = unique("batchacks"), "g", 3000
    consumer = Broker(rabbitmq_broker.url)
    handled: list[bytes] = []
    done = asyncio.Event()

    @consumer.subscriber(
        topic, group=group, batch=BatchPolicy(max_size=37, max_wait=0.01), concurrency=6
    )
    async def handle(items: list[bytes]) -> None:
        await asyncio.sleep(random.random() / 50)  # batches end in a shuffled order
        handled.extend(items)
        if len(handled) >= count:
            done.set()

    await consumer.connect()
    await consumer.start()
    async with Broker(rabbitmq_broker.url) as producer:
        for start in range(0, count, 500):
            await producer.publish_batch(
                topic, [str(i).encode() for i in range(start, start + 500)]
            )
    await asyncio.wait_for(done.wait(), 60)
    await asyncio.sleep(0.5)  # a redelivery, if any, would show up now
    await consumer.stop()
    assert sorted(handled, key=int) == [str(i).encode() for i in range(count)]
    assert await queued(rabbitmq_broker.url, f"{topic}::{group}") == []
