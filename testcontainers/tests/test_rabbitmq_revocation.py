"""Revocation on a real RabbitMQ: a delivery whose channel closed says so (``revoked``).

When the connection drops, RabbitMQ puts every unacked delivery of its channels back in the
queue and may hand it to another consumer; the old delivery can no longer be acked. The
adapter declares ``Capabilities.revocable`` and each delivery's ``revoked`` turns true once its
channel is closed, so the core stops running it; deliveries prefetched on the dead channel and
not yet handed out are never handed out (RabbitMQ redelivers them).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from unimq import Broker, Message
from unimq.transport import SubscriptionSpec, SupportsRevocation

pytestmark = pytest.mark.realbroker


async def receive(subscription: Any, count: int) -> list[Any]:
    return [await asyncio.wait_for(subscription.receive(), 30) for _ in range(count)]


async def test_deliveries_of_a_closed_channel_are_revoked_and_redelivered(
    rabbitmq_broker: Any,
) -> None:
    if not rabbitmq_broker.can_control:
        pytest.skip("external broker: cannot drop its connections")
    topic, group = f"revoke.{uuid.uuid4().hex[:8]}", "g"
    consumer = Broker(rabbitmq_broker.url, reconnect_interval=0.5)
    await consumer.connect()
    try:
        transport = consumer.transport
        assert transport.capabilities.revocable
        subscription = await transport.subscribe(SubscriptionSpec(topic, group, prefetch=20))
        async with Broker(rabbitmq_broker.url) as producer:
            for i in range(10):
                await producer.publish(topic, str(i).encode())
        held = await receive(subscription, 4)  # the other 6 wait prefetched in the inbox
        assert all(isinstance(d, SupportsRevocation) for d in held)
        assert not any(d.revoked for d in held)
        await asyncio.sleep(0.3)  # let the rest of the prefetch arrive

        code, out, err = await asyncio.to_thread(
            rabbitmq_broker.exec,
            ["rabbitmqctl", "close_all_connections", "unimq test: revocation"],
        )
        assert code == 0, (out, err)
        deadline = asyncio.get_running_loop().time() + 15
        while not all(d.revoked for d in held):
            assert asyncio.get_running_loop().time() < deadline, "never revoked"
            await asyncio.sleep(0.05)

        # After the reconnect: all 10 again, each from the new channel; none of the 6 that
        # were prefetched on the closed channel is handed out.
        again = await receive(subscription, 10)
        assert not any(d.revoked for d in again)
        assert sorted(int(d.body) for d in again) == list(range(10))
        for delivery in held:
            await delivery.ack()  # logged, no effect: the channel is gone
        for delivery in again:
            await delivery.ack()
        await subscription.close()
    finally:
        await consumer.stop()
    assert await asyncio.wait_for(lag(rabbitmq_broker.url, topic, group), 30) == 0


async def lag(url: str, topic: str, group: str) -> int | None:
    async with Broker(url) as broker:
        return await broker.transport.lag(topic, group)  # type: ignore[attr-defined,no-any-return]


async def test_a_connection_dropped_under_held_handlers_loses_nothing(
    rabbitmq_broker: Any,
) -> None:
    """Through ``Broker``: handlers held (and more deliveries queued) while the connection
    drops; every message is still handled and settled in the end, none lost or stuck."""
    if not rabbitmq_broker.can_control:
        pytest.skip("external broker: cannot drop its connections")
    topic, group = f"revoke.{uuid.uuid4().hex[:8]}", "g"
    consumer = Broker(rabbitmq_broker.url, reconnect_interval=0.5)
    handled: set[bytes] = set()
    gate = asyncio.Event()

    @consumer.subscriber(topic, group=group, concurrency=2)
    async def handle(message: Message) -> None:
        await gate.wait()
        handled.add(message.body)

    await consumer.connect()
    await consumer.start()
    try:
        async with Broker(rabbitmq_broker.url) as producer:
            for i in range(20):
                await producer.publish(topic, str(i).encode())
        await asyncio.sleep(0.5)
        code, out, err = await asyncio.to_thread(
            rabbitmq_broker.exec,
            ["rabbitmqctl", "close_all_connections", "unimq test: revocation"],
        )
        assert code == 0, (out, err)
        gate.set()
        deadline = asyncio.get_running_loop().time() + 30
        while len(handled) < 20:
            assert asyncio.get_running_loop().time() < deadline, sorted(handled)
            await asyncio.sleep(0.1)
    finally:
        await consumer.stop()
    assert await asyncio.wait_for(lag(rabbitmq_broker.url, topic, group), 30) == 0
