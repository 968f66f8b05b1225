"""Regression tests for the delivery-pipeline defects of issue 12 (each failed on 2830ee5).

Every test here drives the public API on ``memory://`` and states the defect it pins.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest

import unimq
from unimq import Broker, Message, Reject, RetryLater, RetryPolicy
from unimq.errors import ConfigurationError, PublishError
from unimq.instrumentation import Publish, PublishNext
from unimq.testing import VirtualClock

pytestmark = pytest.mark.timeout(60)


class FailingPublishes:
    """Publish middleware: the first ``count`` publishes of ``kind`` fail like a broker outage."""

    def __init__(self, kind: str, count: int, on_success: Any = None) -> None:
        self.kind = kind
        self.left = count
        self.failed = 0
        self.on_success = on_success

    async def __call__(self, publish: Publish, call_next: PublishNext) -> None:
        if publish.kind == self.kind and self.left > 0:
            self.left -= 1
            self.failed += 1
            raise PublishError("broker unavailable (injected)")
        await call_next()
        if publish.kind == self.kind and self.on_success is not None:
            self.on_success(publish)


async def settle_on(clock: VirtualClock, broker: Broker, rounds: int = 12) -> None:
    for _ in range(rounds):
        await clock.advance(5)
    await broker.drain(timeout=5)


async def test_a_retry_copy_is_not_given_up_after_a_long_outage() -> None:
    """2830ee5 gave up after 6 tries (about 6 s) and left the delivery stranded: settled=True,
    never acked; drain() never returned."""
    clock = VirtualClock()
    broker = Broker("memory://", clock=clock)
    outage = FailingPublishes("retry", count=9)
    broker.add_publish_middleware(outage)
    attempts: list[int] = []

    @broker.subscriber("t", group="g", retry=RetryPolicy(max_attempts=3, backoff=unimq.fixed(1)))
    async def handle(message: Message) -> None:
        attempts.append(message.attempt)
        if message.attempt == 1:
            raise RuntimeError("first attempt fails")

    async with broker:
        await broker.publish("t", b"x")
        await settle_on(clock, broker)
    assert outage.failed == 9
    assert attempts == [1, 2]


async def test_a_dead_letter_copy_is_not_given_up_and_blocks_its_key() -> None:
    """2830ee5: after the DLQ copy failed, the lane went on past its unsettled head."""
    clock = VirtualClock()
    broker = Broker("memory://", clock=clock)
    events: list[str] = []
    outage = FailingPublishes("dead-letter", count=8, on_success=lambda p: events.append("dlq"))
    broker.add_publish_middleware(outage)

    @broker.subscriber("t", group="g", ordered=True, concurrency=4)
    async def handle(body: str) -> None:
        events.append(body)
        if body == "first":
            raise Reject("bad")

    async with broker:
        await broker.publish("t", "first", key="k")
        await broker.publish("t", "second", key="k")
        await settle_on(clock, broker)
    assert events == ["first", "dlq", "second"]


@pytest.mark.parametrize(
    "raised",
    [
        lambda: RetryLater(math.nan),
        lambda: RetryLater(math.inf),
        lambda: RetryLater(-5.0),
        lambda: RetryLater("service down"),
    ],
    ids=["nan", "inf", "negative", "str"],
)
async def test_an_unusable_retry_delay_falls_back_to_the_backoff(raised: Any) -> None:
    """2830ee5: clock.now() + delay raised (str) or scheduled NaN/inf after settled=True."""
    clock = VirtualClock()
    broker = Broker("memory://", clock=clock)
    attempts: list[int] = []

    @broker.subscriber("t", group="g", retry=RetryPolicy(max_attempts=3, backoff=unimq.fixed(2)))
    async def handle(message: Message) -> None:
        attempts.append(message.attempt)
        if message.attempt == 1:
            raise raised()

    async with broker:
        await broker.publish("t", b"x")
        await settle_on(clock, broker)
    assert attempts == [1, 2]


@pytest.mark.parametrize(
    "backoff",
    [lambda attempt: None, lambda attempt: math.nan, lambda attempt: 1 / 0],
    ids=["none", "nan", "raises"],
)
async def test_a_misbehaving_backoff_still_retries(backoff: Any) -> None:
    """2830ee5: float(None), NaN or the backoff's own exception stranded the delivery."""
    clock = VirtualClock()
    broker = Broker("memory://", clock=clock)
    attempts: list[int] = []

    @broker.subscriber("t", group="g", retry=RetryPolicy(max_attempts=2, backoff=backoff))
    async def handle(message: Message) -> None:
        attempts.append(message.attempt)
        raise RuntimeError("always fails")

    dead: list[str] = []

    @broker.subscriber("t.g.dlq", group="ops")
    async def read_dead(message: Message) -> None:
        dead.append(message.headers["unimq-dlq-reason"])

    async with broker:
        await broker.publish("t", b"x")
        await settle_on(clock, broker)
    assert attempts == [1, 2]
    assert dead == ["max-attempts"]


class FlakyStore(unimq.idempotency.MemoryIdempotencyStore):  # type: ignore[name-defined,misc]
    def __init__(self, begin_failures: int, complete_failures: int) -> None:
        super().__init__()
        self.begin_failures = begin_failures
        self.complete_failures = complete_failures

    async def begin(self, group: str, message_id: str, lease: float) -> bool:
        if self.begin_failures:
            self.begin_failures -= 1
            raise ConnectionError("store down (injected)")
        return bool(await super().begin(group, message_id, lease))

    async def complete(self, group: str, message_id: str) -> None:
        if self.complete_failures:
            self.complete_failures -= 1
            raise ConnectionError("store down (injected)")
        await super().complete(group, message_id)


async def test_an_idempotency_store_outage_does_not_strand_deliveries() -> None:
    """2830ee5: an exception from the store escaped after settled=True; never acked."""
    import unimq.idempotency  # noqa: F401  (FlakyStore's base)

    clock = VirtualClock()
    store = FlakyStore(begin_failures=3, complete_failures=1)
    broker = Broker("memory://", clock=clock, idempotency_store=store)
    seen: list[bytes] = []

    @broker.subscriber("t", group="g", idempotent=True)
    async def handle(body: bytes) -> None:
        seen.append(body)

    async with broker:
        await broker.publish("t", b"a")
        await broker.publish("t", b"b")
        await settle_on(clock, broker)
    assert sorted(seen) == [b"a", b"b"]


async def test_dead_letter_to_the_subscribers_own_topic_is_refused() -> None:
    """2830ee5 accepted it, and a dead letter came back to the same handler forever."""
    broker = Broker("memory://")
    with pytest.raises(ConfigurationError, match="forever"):

        @broker.subscriber("t", group="g", dead_letter="t")
        async def handle(body: bytes) -> None: ...


async def test_a_handler_publishing_to_its_own_topic_does_not_starve_the_loop() -> None:
    """2830ee5: receive() never awaited while items were queued, so a self-feeding handler
    with concurrency=1 kept the event loop from running anything else."""
    broker = Broker("memory://")
    ticks = 0
    ticks_seen: list[int] = []
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    @broker.subscriber("t", group="g", concurrency=1)
    async def handle(body: str) -> None:
        n = int(body)
        if n < 2000:
            await broker.publish("t", str(n + 1))
        else:
            ticks_seen.append(ticks)
            done.set()

    async with broker:
        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        start = ticks
        await broker.publish("t", "0")
        await asyncio.wait_for(done.wait(), 30)
        task.cancel()
    assert ticks_seen and ticks_seen[0] - start > 10


async def test_a_stopped_brokers_leftover_messages_do_not_hang_the_virtual_clock() -> None:
    """2830ee5 kept every hub's idle probe on the clock forever: a message left in a group
    queue of a stopped broker made every later advance() wait for it."""
    clock = VirtualClock()
    broker = Broker("memory://", clock=clock, graceful_timeout=0.1)
    gate = asyncio.Event()

    @broker.subscriber("t", group="g", concurrency=1)
    async def handle(body: bytes) -> None:
        await gate.wait()

    async with broker:
        for _ in range(3):
            await broker.publish("t", b"x")
        await asyncio.sleep(0.05)
    await asyncio.wait_for(clock.advance(1), 5)

    other = Broker("memory://", clock=clock)
    async with other:
        await asyncio.wait_for(clock.advance(1), 5)


async def test_one_hot_key_keeps_publish_order_with_concurrency() -> None:
    """The issue's repro: 2830ee5 handled [0, 8, 9, ..., 19, 1, ..., 7]."""
    broker = Broker("memory://")
    seen: list[int] = []

    @broker.subscriber("t", group="g", ordered=True, concurrency=8)
    async def handle(message: Message) -> None:
        seen.append(int(message.body))

    async with broker:
        await asyncio.sleep(0.01)  # every worker waits in receive(): deliveries are handed over
        for i in range(20):
            await broker.publish("t", str(i).encode(), key="k")
        await broker.drain(timeout=5)
    assert seen == list(range(20))


async def test_a_hot_key_does_not_hold_other_keys_back_while_slots_are_free() -> None:
    """2830ee5: with concurrency=4, a B message waited 0.71 s behind 20 A messages."""
    broker = Broker("memory://")
    seen: list[str] = []

    @broker.subscriber("t", group="g", ordered=True, concurrency=4)
    async def handle(body: str) -> None:
        if body.startswith("A"):
            await asyncio.sleep(0.03)
        seen.append(body)

    async with broker:
        for i in range(20):
            await broker.publish("t", f"A{i}", key="A")
        await broker.publish("t", "B", key="B")
        await broker.drain(timeout=10)
    assert seen.index("B") <= 2, seen
    assert [s for s in seen if s != "B"] == [f"A{i}" for i in range(20)]


async def test_shutdown_does_not_wait_for_an_in_place_retry_backoff() -> None:
    """2830ee5 waited the whole graceful_timeout for an ordered retry that only slept."""
    broker = Broker("memory://", graceful_timeout=10)
    attempts: list[int] = []
    failed = asyncio.Event()

    @broker.subscriber(
        "t", group="g", ordered=True, retry=RetryPolicy(max_attempts=5, backoff=unimq.fixed(60))
    )
    async def handle(message: Message) -> None:
        attempts.append(message.attempt)
        failed.set()
        raise RuntimeError("fails")

    async with broker:
        await broker.publish("t", b"x", key="k")
        await asyncio.wait_for(failed.wait(), 5)
        await asyncio.sleep(0.05)
        started = time.monotonic()
    assert time.monotonic() - started < 2
    assert attempts == [1]


async def test_middleware_sees_the_outcome() -> None:
    """Issue 12: user middleware sees how a handling ended (2830ee5 had no outcome)."""
    from unimq.delivery.outcome import Ack, DeadLetter, Retry

    clock = VirtualClock()
    broker = Broker("memory://", clock=clock)
    outcomes: list[object] = []

    async def record(message: Message, call_next: Any) -> Any:
        try:
            return await call_next()
        finally:
            outcomes.append(message.outcome)

    broker.add_middleware(record)

    @broker.subscriber("t", group="g", retry=RetryPolicy(max_attempts=2, backoff=unimq.fixed(1)))
    async def handle(body: str) -> None:
        if body == "retry":
            raise RuntimeError("fails")
        if body == "reject":
            raise Reject("no")

    async with broker:
        for body in ("ok", "retry", "reject"):
            await broker.publish("t", body)
        await settle_on(clock, broker)
    kinds = sorted(type(o).__name__ for o in outcomes)
    assert kinds == ["Ack", "DeadLetter", "DeadLetter", "Retry"], outcomes
    assert {o.reason for o in outcomes if isinstance(o, DeadLetter)} == {"rejected", "max-attempts"}
    assert any(isinstance(o, Retry) for o in outcomes) and any(isinstance(o, Ack) for o in outcomes)


async def test_a_dead_letter_of_an_error_with_a_lone_surrogate_is_written() -> None:
    """The diagnostics of a dead letter must always be encodable (found in review of #12)."""
    broker = Broker("memory://")
    seen: list[str] = []

    @broker.subscriber("t", group="g")
    async def handle(body: bytes) -> None:
        raise Reject("bad \ud800 text")

    @broker.subscriber("t.g.dlq", group="ops")
    async def read_dead(message: Message) -> None:
        seen.append(message.headers["unimq-error-message"])

    async with broker:
        await broker.publish("t", b"x")
        await broker.drain(timeout=5)
    assert seen and seen[0].encode("utf-8")
