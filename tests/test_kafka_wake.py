"""Waiting workers of a Kafka subscription are woken one at a time, as a chain: every worker
still gets a delivery when handlers wait, and a handler that never waits takes what is there
without waking the others for nothing (the consume path's cost, issue 14).

No broker: messages are put where the consumer thread would put them, and the loop is told
as the thread tells it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("confluent_kafka")

import confluent_kafka
from unimq_kafka.subscription import KafkaSubscription


def _subscription(prefetch: int) -> KafkaSubscription:
    subscription = KafkaSubscription({}, ["t"], prefetch=prefetch, name="t", revoke_timeout=1)
    subscription._tracker.assign([("t", 0)])
    subscription._thread._assigned.add(("t", 0))
    return subscription


def _arrive(subscription: KafkaSubscription, count: int) -> None:
    """What the consumer thread does after a poll: buffer the messages, notify the loop."""
    subscription._thread._ready.extend(
        confluent_kafka.Message(topic="t", partition=0, offset=i, value=b"x") for i in range(count)
    )
    subscription._notify()


async def test_every_waiting_worker_gets_a_delivery_when_handlers_wait() -> None:
    subscription = _subscription(prefetch=4)
    holding: list[int] = []
    release = asyncio.Event()

    async def worker() -> None:
        delivery = await subscription.receive()
        assert delivery is not None
        holding.append(delivery._message.offset())
        await release.wait()  # a handler that waits (I/O)
        await delivery.ack()

    workers = [asyncio.create_task(worker()) for _ in range(4)]
    await asyncio.sleep(0)  # all four wait for a delivery
    _arrive(subscription, 8)
    for _ in range(20):  # a few loop iterations: the chain wakes one worker per iteration
        await asyncio.sleep(0)
    assert sorted(holding) == [0, 1, 2, 3]
    release.set()
    await asyncio.gather(*workers)
    await subscription.stop()


class _CountingLoop:
    """The running loop, counting the futures made on it (a worker's wait makes one)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.futures = 0

    def create_future(self) -> asyncio.Future[bool]:
        self.futures += 1
        return self.loop.create_future()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loop, name)


async def test_a_worker_that_never_waits_wakes_no_one_for_nothing() -> None:
    subscription = _subscription(prefetch=64)
    loop = subscription._loop = _CountingLoop(subscription._loop)  # type: ignore[assignment]
    taken = 0

    async def worker() -> None:
        nonlocal taken
        while True:
            delivery = await subscription.receive()
            if delivery is None:
                return
            taken += 1
            await delivery.ack()  # a handler that never waits: no yield between messages

    workers = [asyncio.create_task(worker()) for _ in range(16)]
    await asyncio.sleep(0)
    assert loop.futures == 16  # every worker waits
    _arrive(subscription, 64)
    for _ in range(20):
        await asyncio.sleep(0)
    assert taken == 64
    # One worker takes all 64; at most a spare one or two woke and waited again (before:
    # all 16 were woken, 15 of them for nothing).
    assert loop.futures - 16 <= 3, f"{loop.futures - 16} waits again after one batch"
    await subscription.stop()
    await asyncio.gather(*workers)


async def test_a_worker_cancelled_after_its_wake_hands_the_wake_on() -> None:
    """The chain's next link cancelled between its wake and its first step (a subscriber
    scaled down, a task group cancelled): the wake goes to the next waiting worker, and no
    delivery waits for the next arrival."""
    subscription = _subscription(prefetch=4)
    got: list[int] = []

    async def worker() -> None:
        delivery = await subscription.receive()
        assert delivery is not None
        got.append(delivery._message.offset())
        await delivery.ack()

    doomed = asyncio.create_task(subscription.receive())
    survivor = asyncio.create_task(worker())
    await asyncio.sleep(0)  # both wait; the doomed one first in line
    _arrive(subscription, 1)
    await asyncio.sleep(0)  # the loop takes it: the first in line is woken, has not run yet
    assert subscription._woken == 1 and not doomed.done()
    doomed.cancel()  # before it runs
    for _ in range(20):
        await asyncio.sleep(0)
    assert doomed.cancelled()
    assert got == [0], "the delivery waited for a wake that the cancelled worker took"
    await subscription.stop()
    await asyncio.gather(survivor)


async def test_receive_many_hands_out_in_order_whatever_it_is_asked_for() -> None:
    """``receive_many`` takes part of the loop's queue (``max_n`` below what waits) or all of
    it, and the deliveries come out in offset order, each once, every one taken (in flight)."""
    subscription = _subscription(prefetch=10)
    _arrive(subscription, 25)
    offsets: list[int] = []
    for max_n in (4, 100, 1, 3, 100, 100, 100):
        batch = await subscription.receive_many(max_n)
        assert 1 <= len(batch) <= max_n
        offsets.extend(delivery._offset for delivery in batch)
        if len(offsets) == 25:
            break
    assert offsets == list(range(25))
    assert subscription._tracker._parts[("t", 0)].in_flight == 25
    await subscription.stop()
