"""RocketMQ on a real broker: the transport knows a retry topic by ``SubscriptionSpec.role``.

An ordered subscriber reads a FIFO topic; its retry topic only carries delay re-hops and stays
a delay topic. A main topic that happens to be named like a retry topic
(``<something>.<group>.retry``), guessed from the name, would be provisioned as a delay topic,
and the subscriber would lose its per-key order.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from unimq import Broker, Message
from unimq.naming import retry_topic

pytest.importorskip("rocketmq")

pytestmark = [pytest.mark.realbroker, pytest.mark.asyncio]


async def test_an_ordered_main_topic_named_like_a_retry_topic_is_fifo(
    rocketmq_broker: Any,
) -> None:
    tag = uuid.uuid4().hex[:8]
    group = f"roles-{tag}"
    topic = f"roles.{tag}.{group}.retry"
    broker = Broker(
        rocketmq_broker.url, auto_provision=True, namesrv=rocketmq_broker.namesrv_address
    )

    @broker.subscriber(topic, group=group, ordered=True)
    async def handle(message: Message) -> None:
        pass

    async with broker:
        from unimq_rocketmq import names

        transport: Any = broker.transport
        assert await transport._is_fifo(names.topic_name(topic)), (
            "the ordered subscriber's main topic was provisioned as a delay topic"
        )
        retry = names.topic_name(retry_topic(topic, group))
        assert not await transport._is_fifo(retry), "its retry topic must stay a delay topic"
