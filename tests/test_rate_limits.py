"""Rate limits on the memory backend and the virtual clock: batches, the listener event, and a
shared limiter's outage (a fake store registered as a plugin, exactly as unimq_redis is)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from unimq import (
    BatchPolicy,
    Broker,
    ConfigurationError,
    Message,
    RateLimit,
    RateLimiterUnavailableError,
)
from unimq.clock import Clock
from unimq.hookspecs import hookimpl
from unimq.instrumentation import Listener
from unimq.plugins import RateLimiterRegistry, register_plugin
from unimq.ratelimit import RateLimiter, TokenBucket
from unimq.testing import VirtualClock

pytestmark = pytest.mark.timeout(60)

# -- a shared limiter whose store can go down -------------------------------------------------


class FakeStore:
    """What the fake limiters of one test share: a bucket, and whether the store is up."""

    def __init__(self) -> None:
        self.clock: Clock | None = None
        self.bucket: TokenBucket | None = None
        self.down = False
        self.down_at_start = False
        self.calls_while_down = 0
        self.closed = 0


STORE = FakeStore()


class FakeLimiter:
    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit

    async def start(self) -> None:
        if STORE.down_at_start:
            raise RateLimiterUnavailableError("fake store ':pw@' is down")
        assert STORE.clock is not None
        if STORE.bucket is None:
            STORE.bucket = TokenBucket(self.limit, STORE.clock)

    async def acquire(self, tokens: int) -> float:
        if STORE.down:
            STORE.calls_while_down += 1
            raise RateLimiterUnavailableError("fake store is down", retry_after=0.5)
        assert STORE.bucket is not None
        return STORE.bucket.reserve(tokens)

    async def close(self) -> None:
        STORE.closed += 1


class _FakePlugin:
    @hookimpl
    def unimq_register_rate_limiters(self, registry: RateLimiterRegistry) -> None:
        registry.add("fakerate", lambda limit, topic, group: FakeLimiter(limit))


register_plugin(_FakePlugin(), name="unimq-test-fakerate")


@pytest.fixture
def store() -> FakeStore:
    STORE.__init__()  # type: ignore[misc]
    return STORE


def test_fake_limiter_is_a_rate_limiter() -> None:
    assert isinstance(FakeLimiter(RateLimit(1)), RateLimiter)
    assert isinstance(TokenBucket(RateLimit(1), VirtualClock()), RateLimiter)


# -- pacing -----------------------------------------------------------------------------------


async def test_a_batch_subscriber_takes_one_token_per_message() -> None:
    """1,000 messages in batches of 10 at 100/s (burst 10): the last batch starts at 9.9 s."""
    clock = VirtualClock(start=1_000.0)
    broker = Broker("memory://", clock=clock)
    starts: list[tuple[float, int]] = []

    @broker.subscriber(
        "t",
        group="g",
        concurrency=4,
        batch=BatchPolicy(max_size=10, max_wait=0.01),
        rate_limit=RateLimit(100, burst=10),
    )
    async def handle(bodies: list[bytes]) -> None:
        starts.append((clock.now(), len(bodies)))

    async with broker:
        await broker.publish_batch("t", [b"x"] * 1000)
        for _ in range(200):  # 50 virtual seconds at most
            if sum(n for _, n in starts) >= 1000:
                break
            await clock.advance(0.25)
        await broker.drain(timeout=5)
    assert sum(n for _, n in starts) == 1000
    elapsed = starts[-1][0] - starts[0][0]
    # 1,000 tokens, the first 10 from the full bucket: 990 / 100 s, whatever the batch sizes
    # (a smaller last batch starts earlier), never faster.
    assert 9.8 <= elapsed <= 9.91, (elapsed, starts[-3:])


class _Waits(Listener):
    def __init__(self) -> None:
        self.tokens = 0
        self.waited = 0.0
        self.held = 0.0

    def rate_limited(self, topic: str, group: str, tokens: int, wait: float, held: float) -> None:
        assert (topic, group) == ("t", "g")
        self.tokens += tokens
        self.waited += wait
        self.held += held


async def test_the_listener_hears_every_start_and_the_time_held_back_once() -> None:
    """8 workers wait at once; the time held back is wall time, not the sum of their waits."""
    clock = VirtualClock()
    broker = Broker("memory://", clock=clock)
    waits = _Waits()
    broker.add_listener(waits)
    done: list[float] = []

    @broker.subscriber("t", group="g", concurrency=8, rate_limit=RateLimit(10, burst=1))
    async def handle(body: bytes) -> None:
        done.append(clock.now())

    async with broker:
        for _ in range(21):
            await broker.publish("t", b"x")
        for _ in range(200):
            if len(done) >= 21:
                break
            await clock.advance(0.05)
        await broker.drain(timeout=5)
    assert waits.tokens == 21
    assert waits.held == pytest.approx(2.0)  # 20 starts after the first, 0.1 s apart
    assert waits.waited > 5 * waits.held  # overlapping waits of the 8 workers


# -- a shared limiter: configuration, start, outage -------------------------------------------


def test_an_uninstalled_shared_store_fails_at_subscribe_time_without_the_password() -> None:
    broker = Broker("memory://")
    with pytest.raises(ConfigurationError) as caught:

        @broker.subscriber("t", group="g", rate_limit=RateLimit(5, shared="nosuch://u:pw1@h/0"))
        async def handle(body: bytes) -> None: ...

    assert "nosuch://" in str(caught.value) and "redis://" in str(caught.value)
    assert "pw1" not in str(caught.value)


@pytest.mark.parametrize("shared", ["redis-host:6379", "", 42, "://x"])
def test_a_shared_value_that_is_not_a_url_is_refused(shared: object) -> None:
    with pytest.raises(ConfigurationError, match="shared"):
        RateLimit(5, shared=shared)  # type: ignore[arg-type]


def test_the_shared_url_password_is_masked_in_reprs() -> None:
    limit = RateLimit(5, shared="redis://:s3cr3t@cache:6379/0")
    assert "s3cr3t" not in repr(limit)
    broker = Broker("memory://")

    @broker.subscriber("t", group="g", rate_limit=limit)
    async def handle(body: bytes) -> None: ...

    assert "s3cr3t" not in repr(broker.subscribers)
    with pytest.raises(ConfigurationError) as caught:
        RateLimit(5, shared="redis//:s3cr3t@cache")
    assert "s3cr3t" not in str(caught.value)


async def test_a_shared_store_down_at_start_fails_the_start(store: FakeStore) -> None:
    store.clock = VirtualClock()
    store.down_at_start = True
    broker = Broker("memory://", clock=store.clock)

    @broker.subscriber("t", group="g", rate_limit=RateLimit(5, shared="fakerate://x"))
    async def handle(body: bytes) -> None: ...

    with pytest.raises(RateLimiterUnavailableError, match="down"):
        async with broker:
            pass
    assert not broker.connected
    assert store.closed == 1


async def test_an_outage_pauses_handler_starts_and_drops_nothing(
    store: FakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    clock = store.clock = VirtualClock()
    broker = Broker("memory://", clock=clock)
    seen: list[str] = []

    @broker.subscriber(
        "t", group="g", concurrency=4, rate_limit=RateLimit(10, burst=1, shared="fakerate://x")
    )
    async def handle(message: Message) -> None:
        seen.append(message.body.decode())

    caplog.set_level(logging.INFO, logger="unimq.ratelimit")
    async with broker:
        store.down = True
        for n in range(30):
            await broker.publish("t", str(n))
        for _ in range(20):
            await clock.advance(0.5)
        assert seen == []  # nothing ran over budget, nothing was acked
        assert store.calls_while_down >= 4 * 10  # each worker asked again every 0.5 s
        store.down = False
        for _ in range(100):
            if len(seen) >= 30:
                break
            await clock.advance(0.5)
        await broker.drain(timeout=5)
    assert sorted(seen, key=int) == [str(n) for n in range(30)]  # each once, none dropped
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "paused" in warnings[0].getMessage()
    assert any("available again" in r.getMessage() for r in caplog.records)


async def test_a_broker_stops_promptly_during_an_outage(store: FakeStore) -> None:
    clock = store.clock = VirtualClock()
    broker = Broker("memory://", clock=clock, graceful_timeout=30)
    seen: list[bytes] = []

    @broker.subscriber("t", group="g", rate_limit=RateLimit(10, shared="fakerate://x"))
    async def handle(body: bytes) -> None:
        seen.append(body)

    async with broker:
        store.down = True
        await broker.publish("t", b"x")
        await clock.advance(1)
        loop = asyncio.get_running_loop()
        started = loop.time()
    assert loop.time() - started < 2  # the paused start was cancelled, not waited out
    assert seen == []
    assert store.closed == 1
