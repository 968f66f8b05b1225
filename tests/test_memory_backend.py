"""Memory-backend specifics: shared names, the virtual clock, drain."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

import unimq
from unimq import Broker, ConfigurationError, Message, RetryPolicy
from unimq.testing import VirtualClock


async def test_brokers_with_the_same_name_share_topics() -> None:
    seen: list[bytes] = []
    consumer = Broker("memory://shared-orders")

    @consumer.subscriber("orders", group="g")
    async def handle(body: bytes) -> None:
        seen.append(body)

    async with consumer, Broker("memory://shared-orders") as producer:
        await producer.publish("orders", b"hello")
        await consumer.drain(timeout=5)
    assert seen == [b"hello"]


async def test_unnamed_memory_brokers_are_private() -> None:
    seen: list[bytes] = []
    consumer = Broker("memory://")

    @consumer.subscriber("orders", group="g")
    async def handle(body: bytes) -> None:
        seen.append(body)

    async with consumer, Broker("memory://") as producer:
        await producer.publish("orders", b"hello")
        await asyncio.sleep(0.05)
        await consumer.drain(timeout=5)
    assert seen == []


async def test_virtual_clock_drives_delays() -> None:
    clock = VirtualClock()
    seen: list[float] = []
    broker = Broker("memory://", clock=clock)

    @broker.subscriber("orders.unpaid", group="closer")
    async def close_unpaid(message: Message) -> None:
        seen.append(clock.now())

    async with broker:
        start = clock.now()
        await broker.publish("orders.unpaid", b"o-1", delay=timedelta(minutes=30))
        await broker.drain(timeout=5)  # not due: drain does not wait for it
        assert seen == []
        await clock.advance(29 * 60)
        assert seen == []
        await clock.advance(60)
        assert seen == [start + 30 * 60]


async def test_virtual_clock_drives_backoff_and_dead_letter() -> None:
    clock = VirtualClock()
    attempts: list[tuple[int, float]] = []
    dead: list[Message] = []
    broker = Broker("memory://", clock=clock)
    policy = RetryPolicy(max_attempts=4, backoff=unimq.exponential(initial=10, factor=3, max=60))

    @broker.subscriber("t", group="g", retry=policy)
    async def failing(message: Message) -> None:
        attempts.append((message.attempt, clock.now()))
        raise RuntimeError("down")

    @broker.subscriber("t.g.dlq", group="ops")
    async def dlq(message: Message) -> None:
        dead.append(message)

    async with broker:
        start = clock.now()
        await broker.publish("t", b"x")
        await broker.drain(timeout=5)
        assert [a for a, _ in attempts] == [1]
        await clock.advance(3600)  # one call runs every retry that falls due inside the window
        assert [(a, t - start) for a, t in attempts] == [(1, 0), (2, 10), (3, 40), (4, 100)]
        assert len(dead) == 1 and dead[0].headers["unimq-attempts"] == "4"


async def test_virtual_clock_drives_ordered_in_place_retries() -> None:
    clock = VirtualClock()
    seen: list[tuple[int, int]] = []
    broker = Broker("memory://", clock=clock)

    @broker.subscriber(
        "t", group="g", ordered=True, retry=RetryPolicy(max_attempts=3, backoff=unimq.fixed(5))
    )
    async def handle(body: dict[str, int], message: Message) -> None:
        seen.append((body["n"], message.attempt))
        if body["n"] == 0 and message.attempt < 3:
            raise RuntimeError("again")

    async with broker:
        await broker.publish("t", {"n": 0}, key="k")
        await broker.publish("t", {"n": 1}, key="k")
        await broker.drain(timeout=5)  # the in-place backoff is parked on the clock
        assert seen == [(0, 1)]
        await clock.advance(10)
        assert seen == [(0, 1), (0, 2), (0, 3), (1, 1)]


async def test_drain_waits_for_in_flight_handlers() -> None:
    done: list[int] = []
    broker = Broker("memory://")

    @broker.subscriber("t", group="g", concurrency=10)
    async def slow(body: dict[str, int]) -> None:
        await asyncio.sleep(0.05)
        done.append(body["n"])

    async with broker:
        for n in range(20):
            await broker.publish("t", {"n": n})
        await broker.drain(timeout=10)
        assert sorted(done) == list(range(20))


async def test_sharing_a_name_with_a_different_clock_is_refused() -> None:
    Broker("memory://clocked", clock=VirtualClock())
    with pytest.raises(ConfigurationError, match="another clock"):
        Broker("memory://clocked")


async def test_exponential_backoff_values() -> None:
    backoff = unimq.exponential(initial=0.5, factor=2.0, max=30.0)
    assert [backoff(n) for n in (1, 2, 3, 10)] == [0.5, 1.0, 2.0, 30.0]
    jittered = unimq.exponential(initial=1, factor=1, max=10, jitter=0.5)
    assert all(1.0 <= jittered(1) <= 1.5 for _ in range(50))
    assert unimq.RetryPolicy().max_attempts == 3
    default = unimq.RetryPolicy().backoff
    assert [default(n) for n in (1, 2, 7, 8)] == [1, 2, 60, 60]


async def test_an_early_delivery_is_held_without_blocking_the_subscriber() -> None:
    """A delivery a little before its due time waits without taking the only slot."""
    from unimq import headers as h
    from unimq.transport import OutgoingMessage

    clock = VirtualClock()
    seen: list[str] = []
    broker = Broker("memory://", clock=clock)

    @broker.subscriber("t", group="g", concurrency=1)
    async def handle(body: str) -> None:
        seen.append(body)

    async with broker:
        due = clock.now() + 1.5  # as a broker whose native delay is coarse would deliver it
        early = {h.ID: "early", h.ATTEMPT: "1", h.DELIVER_AT: str(int(due * 1000))}
        await broker.transport.publish(OutgoingMessage("t", b"early", early))
        await broker.publish("t", "now")
        await broker.drain(timeout=5)
        assert seen == ["now"]
        await clock.advance(1.5)
        assert seen == ["now", "early"]


async def test_lanes_of_a_hot_key_are_bounded() -> None:
    """ordered=True: deliveries queued behind a busy key stay bounded (not all of them)."""
    from unimq.delivery.runtime import LANE_ROOM

    broker = Broker("memory://")
    release = asyncio.Event()
    seen: list[int] = []

    @broker.subscriber("t", group="g", ordered=True, concurrency=4)
    async def handle(body: dict[str, int]) -> None:
        await release.wait()
        seen.append(body["n"])

    async with broker:
        for n in range(LANE_ROOM * 2):
            await broker.publish("t", {"n": n}, key="hot")
        await asyncio.sleep(0.1)
        runtime = broker._runtimes[0]
        queued = sum(len(lane.queue) for lane in runtime._lanes.values())
        # concurrency + LANE_ROOM may wait in lanes (so other keys behind a hot one are reached)
        assert 0 < queued <= 4 + LANE_ROOM, f"{queued} deliveries queued in lanes"
        release.set()
        await broker.drain(timeout=10)
    assert seen == list(range(LANE_ROOM * 2))
