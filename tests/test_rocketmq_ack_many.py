"""RocketMQ ``ack_many`` without a broker: a batch's acks go out together, not one round trip
after the other, and each keeps what a single ``ack`` promises (at most once, its failure
logged and never raised, the delivery released from the subscription's book-keeping)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("rocketmq")

from unimq_rocketmq.consumer import RocketMQDelivery

from unimq.delivery.settle import ack_deliveries


class _Message:
    def __init__(self, number: int) -> None:
        self.properties: dict[str, str] = {}
        self.body = b"body"
        self.keys: list[str] = []
        self.message_group = None
        self.message_id = f"m{number}"
        self.born_timestamp = 0


class _Subscription:
    """Records acks; an ack is a round trip (one loop turn here) that may fail."""

    topic = "t"

    def __init__(self, failing: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.failing = failing
        self.acked: list[str] = []
        self.settled_ids: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def ack(self, message: Any) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)
            if message.message_id in self.failing:
                raise RuntimeError("broker said no")
            self.acked.append(message.message_id)
        finally:
            self.in_flight -= 1

    def settled(self, delivery: RocketMQDelivery) -> None:
        self.settled_ids.append(delivery.native_id)


def _deliveries(subscription: _Subscription, count: int) -> list[RocketMQDelivery]:
    return [
        RocketMQDelivery(_Message(n), subscription, invisible_until=1e9)  # type: ignore[arg-type]
        for n in range(count)
    ]


def test_a_batch_is_acked_concurrently_by_the_core() -> None:
    """The core's batch path acks through ``ack_many``: all round trips at once, nothing left
    to settle one by one. On the old code (no ``ack_many``) every delivery came back to the
    core, which acked them one after the other."""

    async def scenario() -> tuple[list[Any], _Subscription]:
        subscription = _Subscription()
        left = await ack_deliveries(_deliveries(subscription, 64))
        return left, subscription

    left, subscription = asyncio.run(scenario())
    assert left == []
    assert subscription.most_in_flight == 64
    assert sorted(subscription.acked) == sorted(f"m{n}" for n in range(64))


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_ack_many_is_ack_of_each(data: st.DataObject) -> None:
    """Repeats, deliveries acked before, failures: each message is acked at most once, each
    failure is logged (not raised), and every delivery is released exactly once."""
    count = data.draw(st.integers(1, 20))
    failing = {f"m{n}" for n in data.draw(st.sets(st.integers(0, count - 1)))}

    async def scenario() -> _Subscription:
        subscription = _Subscription(failing)
        deliveries = _deliveries(subscription, count)
        for delivery in data.draw(st.lists(st.sampled_from(deliveries), max_size=count)):
            await delivery.ack()
        await RocketMQDelivery.ack_many(
            data.draw(st.lists(st.sampled_from(deliveries), max_size=count * 2))
        )
        await RocketMQDelivery.ack_many(deliveries)
        return subscription

    subscription = asyncio.run(scenario())
    assert sorted(subscription.acked) == sorted({f"m{n}" for n in range(count)} - failing)
    assert sorted(subscription.settled_ids) == sorted(f"m{n}" for n in range(count))
