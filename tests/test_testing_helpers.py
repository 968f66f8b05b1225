"""``unimq.testing``: record(broker), fail_fast(broker), reset_memory()."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

import unimq
from unimq import Broker, Message, Reject, RetryPolicy, fixed
from unimq.delivery.outcome import DeadLetter, Retry
from unimq.transport import SubscriptionSpec


class Order(BaseModel):
    order_id: str


async def test_record_shows_each_call_and_how_it_ended() -> None:
    broker = Broker("memory://helpers-record", clock=unimq.testing.VirtualClock())
    calls = unimq.testing.record(broker)

    @broker.subscriber("h.orders", group="g", retry=RetryPolicy(max_attempts=2, backoff=fixed(1)))
    async def handle(order: Order) -> str:
        if order.order_id == "bad":
            raise KeyError("sku")
        return f"ok {order.order_id}"

    async with broker:
        await broker.publish("h.orders", Order(order_id="o-1"))
        await broker.publish("h.orders", Order(order_id="bad"))
        await calls.wait_for(2)
    good, bad = sorted(calls.on("h.orders", "g"), key=lambda c: c.json()["order_id"] == "bad")
    assert good.json() == {"order_id": "o-1"} and good.result == "ok o-1" and good.error is None
    assert isinstance(bad.error, KeyError) and isinstance(bad.outcome, Retry)
    assert bad.attempt == 1 and calls.on("other.topic") == []


async def test_record_wait_for_times_out_with_a_count() -> None:
    broker = Broker("memory://helpers-record-timeout")
    calls = unimq.testing.record(broker)
    with pytest.raises(TimeoutError, match="expected 1 handler call"):
        await calls.wait_for(1, timeout=0.05)


async def test_fail_fast_raises_the_handlers_exception_without_retrying() -> None:
    broker = Broker("memory://helpers-failfast")
    errors = unimq.testing.fail_fast(broker)
    calls = unimq.testing.record(broker)
    attempts: list[int] = []

    @broker.subscriber("h.ff", group="g", retry=RetryPolicy(max_attempts=5, backoff=fixed(0)))
    async def handle(message: Message) -> None:
        attempts.append(message.attempt)
        raise KeyError("sku")

    async with broker:
        await broker.publish("h.ff", b"x")
        with pytest.raises(KeyError, match="sku"):
            await errors.drain()
        errors.check()  # raised once only
    assert attempts == [1]  # not retried
    assert len(calls) == 1


async def test_fail_fast_leaves_reject_alone() -> None:
    broker = Broker("memory://helpers-failfast-reject")
    errors = unimq.testing.fail_fast(broker)
    calls = unimq.testing.record(broker)

    @broker.subscriber("h.rej", group="g")
    async def handle(message: Message) -> None:
        raise Reject("bad input")

    async with broker:
        await broker.publish("h.rej", b"x")
        await errors.drain()  # a decision, not a bug: nothing raised
    assert isinstance(calls.calls[0].outcome, DeadLetter)


async def test_reset_memory_empties_a_hub_an_existing_broker_uses() -> None:
    publisher = Broker("memory://helpers-reset")
    consumer = Broker("memory://helpers-reset")
    seen: list[bytes] = []

    @consumer.subscriber("h.reset", group="g")
    async def handle(message: Message) -> None:
        seen.append(message.body)

    await consumer.connect()
    await consumer.transport.subscribe(  # the group exists; nobody consumes it yet
        SubscriptionSpec(topic="h.reset", group="g", prefetch=1)
    )
    await publisher.connect()
    await publisher.publish("h.reset", b"left over by an earlier test")
    await publisher.publish("h.unclaimed", b"no group yet")
    await publisher.stop()
    await consumer.stop()
    unimq.testing.reset_memory("helpers-reset")
    async with consumer, Broker("memory://helpers-reset") as again:
        await again.publish("h.reset", b"this test's message")
        await consumer.drain(5)
    assert seen == [b"this test's message"]
