"""Smoke test of the RabbitMQ test broker with its raw client (aio-pika)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from unimq import Broker, Message

aio_pika = pytest.importorskip("aio_pika")

pytestmark = [pytest.mark.realbroker]


async def _get_one(queue, timeout: float = 15.0):
    """Poll basic.get until a message arrives (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        msg = await queue.get(no_ack=False, fail=False)
        if msg is not None:
            return msg
        if loop.time() > deadline:
            raise AssertionError(f"no message on {queue.name} within {timeout}s")
        await asyncio.sleep(0.1)


@pytest.mark.asyncio
async def test_publish_consume_ack(rabbitmq_broker):
    assert rabbitmq_broker.url.startswith("amqp://guest:guest@127.0.0.1:")
    qname = f"smoke-{uuid.uuid4().hex[:8]}"
    conn = await asyncio.wait_for(aio_pika.connect(rabbitmq_broker.url), 30)
    async with conn:
        ch = await conn.channel()  # publisher confirms on
        q = await ch.declare_queue(qname, durable=True)
        await ch.default_exchange.publish(
            aio_pika.Message(b"hello", message_id="m1"), routing_key=qname
        )
        # consume through a consumer (basic.consume), then ack
        async with q.iterator(timeout=15) as it:
            async for msg in it:
                assert msg.body == b"hello"
                assert msg.message_id == "m1"
                await msg.ack()
                break
        q2 = await ch.declare_queue(qname, durable=True, passive=True)
        assert q2.declaration_result.message_count == 0
        await q.delete(if_unused=False, if_empty=False)


@pytest.mark.asyncio
async def test_durable_message_survives_restart(rabbitmq_broker):
    if not rabbitmq_broker.can_control:
        pytest.skip("external broker: cannot restart it")
    qname = f"durable-{uuid.uuid4().hex[:8]}"
    conn = await asyncio.wait_for(aio_pika.connect(rabbitmq_broker.url), 30)
    async with conn:
        ch = await conn.channel()
        await ch.declare_queue(qname, durable=True)
        await ch.default_exchange.publish(
            aio_pika.Message(b"before-restart", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=qname,
        )  # confirmed by the broker before returning

    await asyncio.get_running_loop().run_in_executor(None, rabbitmq_broker.restart)

    conn = await asyncio.wait_for(aio_pika.connect(rabbitmq_broker.url), 30)
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue(qname, durable=True)
        msg = await _get_one(q)
        assert msg.body == b"before-restart"
        await msg.ack()
        assert await q.get(no_ack=False, fail=False) is None
        await q.delete(if_unused=False, if_empty=False)


@pytest.mark.asyncio
async def test_rabbitmq_4_refuses_deprecated_features(rabbitmq_broker):
    """The 4.x test broker denies RabbitMQ's deprecated features (images/rabbitmq/rabbitmq-4.conf),
    as newer releases do by default, so the suites prove unimq never needs them. A refused
    declaration closes the whole connection (541 INTERNAL_ERROR), not just the channel. 3.x has
    no such switch and accepts them."""
    if rabbitmq_broker.version is None:
        pytest.skip("external broker: its version and configuration are unknown")
    refused = not rabbitmq_broker.version.startswith("3.")
    # transient_nonexcl_queues is permitted on purpose (images/rabbitmq/rabbitmq-4.conf).
    attempts = {
        "queue_master_locator": {
            "durable": True,
            "arguments": {"x-queue-master-locator": "min-masters"},
        },
    }
    for feature, declare in attempts.items():
        qname = f"deprecated-{uuid.uuid4().hex[:8]}"
        conn = await asyncio.wait_for(aio_pika.connect(rabbitmq_broker.url), 30)
        try:
            ch = await conn.channel()
            if refused:
                with pytest.raises(aio_pika.exceptions.ConnectionClosed, match=feature):
                    await ch.declare_queue(qname, **declare)
            else:
                q = await ch.declare_queue(qname, **declare)
                await q.delete(if_unused=False, if_empty=False)
        finally:
            await conn.close()


@pytest.mark.asyncio
async def test_unimq_declares_no_transient_non_exclusive_queue(rabbitmq_broker):
    """What the denied ``transient_nonexcl_queues`` feature used to prove (it is permitted in the
    test image, see images/rabbitmq/rabbitmq-4.conf): every queue unimq declares, for a group,
    a broadcast subscriber, a request's replies and the delay ladder, is durable or exclusive."""
    if rabbitmq_broker.version is None:
        pytest.skip("external broker: rabbitmqctl is not reachable")
    topic = f"transient-{uuid.uuid4().hex[:8]}"
    broker = Broker(rabbitmq_broker.url)

    @broker.subscriber(topic, group="g")
    async def grouped(message: Message) -> str:
        return "pong"

    @broker.subscriber(topic, group="b", broadcast=True)
    async def everyone(message: Message) -> None:
        pass

    async with broker:
        await broker.publish(topic, b"x", delay=1.0)
        await broker.request(topic, b"ping", timeout=30)
        code, out, err = await asyncio.to_thread(
            rabbitmq_broker.exec,
            ["rabbitmqctl", "-q", "list_queues", "name", "durable", "exclusive"],
        )
    assert code == 0, (out, err)
    rows = [line.split("\t") for line in out.splitlines() if line.strip()]
    assert any(topic in row[0] for row in rows), out  # the listing shows this test's queues
    transient = [row[0] for row in rows if row[1:3] == ["false", "false"]]
    assert not transient, transient
