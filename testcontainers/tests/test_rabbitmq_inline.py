"""Inline deliveries on a real RabbitMQ (``unimq_rabbitmq.inline``).

The subscription's channel hands every delivery to the subscription from its reader, with no
task per message, and its frame queue holds a whole prefetch: checked on the channel the
adapter consumes from, with bodies of every size, from empty to several AMQP body frames
(frame_max is 128 KiB), delivered intact and in order; after a reconnect the new channel is set
up the same way.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from unimq_rabbitmq import inline

from unimq import Broker
from unimq.transport import SubscriptionSpec

pytestmark = pytest.mark.realbroker

PREFETCH = 40
BODIES = [b"", b"x", b"y" * 1000, b"z" * 131_072, bytes(range(256)) * 1200, b"last"]


async def receive_all(subscription: Any, count: int) -> list[Any]:
    out = []
    for _ in range(count):
        delivery = await asyncio.wait_for(subscription.receive(), 30)
        out.append(delivery)
        await delivery.ack()
    return out


def installed(subscription: Any) -> inline.InlineDeliveries:
    reader = subscription._underlay._on_deliver_frame
    assert isinstance(reader, inline.InlineDeliveries), reader
    return reader


async def test_deliveries_are_handed_over_inline_intact_and_in_order(
    rabbitmq_broker: Any,
) -> None:
    topic, group = f"inline.{uuid.uuid4().hex[:8]}", "g"
    consumer = Broker(rabbitmq_broker.url)
    await consumer.connect()
    try:
        spec = SubscriptionSpec(topic, group, prefetch=PREFETCH)
        subscription = await consumer.transport.subscribe(spec)
        reader = installed(subscription)
        frames = subscription._underlay.frames
        assert frames.maxsize == inline.FRAMES_PER_DELIVERY * PREFETCH + inline.FRAME_MARGIN
        async with Broker(rabbitmq_broker.url) as producer:
            for body in BODIES * 3:
                await producer.publish(topic, body)
        got = await receive_all(subscription, len(BODIES) * 3)
        assert [d.body for d in got] == BODIES * 3
        assert reader.inlined == len(BODIES) * 3
        await subscription.close()
    finally:
        await consumer.stop()


async def test_a_reconnected_channel_is_set_up_the_same_way(rabbitmq_broker: Any) -> None:
    if not rabbitmq_broker.can_control:
        pytest.skip("external broker: cannot drop its connections")
    topic, group = f"inline.{uuid.uuid4().hex[:8]}", "g"
    consumer = Broker(rabbitmq_broker.url, reconnect_interval=0.5)
    await consumer.connect()
    try:
        spec = SubscriptionSpec(topic, group, prefetch=PREFETCH)
        subscription = await consumer.transport.subscribe(spec)
        before = subscription._underlay
        code, out, err = await asyncio.to_thread(
            rabbitmq_broker.exec,
            ["rabbitmqctl", "close_all_connections", "unimq test: inline reconnect"],
        )
        assert code == 0, (out, err)
        deadline = asyncio.get_running_loop().time() + 30
        while subscription._underlay is before or subscription._underlay.is_closed:
            assert asyncio.get_running_loop().time() < deadline, "never consumed again"
            await asyncio.sleep(0.1)
        reader = installed(subscription)
        async with Broker(rabbitmq_broker.url) as producer:
            for i in range(10):
                await producer.publish(topic, str(i).encode())
        got = await receive_all(subscription, 10)
        assert [int(d.body) for d in got] == list(range(10))
        assert reader.inlined == 10
        frames = subscription._underlay.frames
        assert frames.maxsize == inline.FRAMES_PER_DELIVERY * PREFETCH + inline.FRAME_MARGIN
        await subscription.close()
    finally:
        await consumer.stop()
