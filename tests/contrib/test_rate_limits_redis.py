"""The shared rate limit against a real Redis: one budget for several clients, its key, the
URL options, passwords, and what an outage does (a proxy cut or silenced in front of Redis)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from unimq_redis import RedisRateLimiter

from unimq import Broker, ConfigurationError, Message, RateLimit, RateLimiterUnavailableError

from .servers import RedisServer
from .tcp_proxy import TcpProxy

pytestmark = pytest.mark.timeout(60)


def _name() -> str:
    return f"rl-{uuid.uuid4().hex[:8]}"


@pytest_asyncio.fixture
async def proxy(redis_server: RedisServer) -> AsyncIterator[TcpProxy]:
    proxy = await TcpProxy(redis_server.port).start()
    try:
        yield proxy
    finally:
        await proxy.close()


def _via(proxy: TcpProxy, server: RedisServer) -> str:
    return f"redis://:{server.password}@127.0.0.1:{proxy.port}/0"


async def test_two_clients_share_one_budget_in_reservation_order(
    redis_server: RedisServer,
) -> None:
    """20 tokens at 5/s (burst 1) taken in turn by two clients: the waits they are told put the
    last start 3.8 s after the first (two separate buckets would say 1.8 s). Each start time is
    known within the call's round trip, so the check holds on a busy machine too."""
    limit = RateLimit(5, burst=1, shared=redis_server.url)
    topic = _name()
    a = RedisRateLimiter.from_url(limit, topic, "g")
    b = RedisRateLimiter.from_url(limit, topic, "g")
    try:
        await a.start()
        await b.start()
        due: list[tuple[float, float]] = []  # (earliest, latest) local time of each start
        for n in range(20):
            before = time.monotonic()
            wait = await (a if n % 2 else b).acquire(1)
            due.append((before + wait, time.monotonic() + wait))
        assert due[0][1] - due[0][0] < 1 and due[0][0] <= due[1][1]
        shortest = due[-1][0] - due[0][1]
        longest = due[-1][1] - due[0][0]
        assert shortest - 1e-3 <= 19 / 5 <= longest + 1e-3, (shortest, longest)
        assert longest - shortest < 1.0  # the calls were quick enough to tell 3.8 from 1.8
        # another group of the same topic has its own budget
        other = RedisRateLimiter.from_url(limit, topic, "other")
        try:
            assert await other.acquire(1) == 0.0
        finally:
            await other.close()
    finally:
        await a.close()
        await b.close()


async def test_the_bucket_key_its_expiry_and_a_named_budget(redis_server: RedisServer) -> None:
    topic = _name()
    # 0.1 token per second: the time the calls take (even on a busy machine) hardly refills it
    limit = RateLimit(1, per=10.0, burst=4, shared=f"{redis_server.url}?prefix=test:rate:")
    limiter = RedisRateLimiter.from_url(limit, topic, "g:1")
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        assert limiter.key == f"test:rate:{topic}:g%3A1"
        await limiter.start()  # takes no token
        for _ in range(4):
            assert await limiter.acquire(1) == 0.0  # the burst
        assert 9.0 < await limiter.acquire(1) <= 10.0  # one token per 10 s
        level = float(await raw.hget(limiter.key, "level"))
        assert -1.0 <= level < -0.9
        # the key lives until the bucket would be full again (5 tokens: 50 s), plus a second
        assert 49_000 < await raw.pttl(limiter.key) <= 51_000
        # ?key= names the budget: two subscribers share it
        shared = f"{redis_server.url}?key={topic}-db"
        x = RedisRateLimiter.from_url(RateLimit(1, per=10.0, shared=shared), "orders", "writer")
        y = RedisRateLimiter.from_url(RateLimit(1, per=10.0, shared=shared), "payments", "writer")
        try:
            assert x.key == y.key == f"unimq:rate:{topic}-db"
            assert await x.acquire(1) == 0.0
            assert 9.0 < await y.acquire(1) <= 10.0
        finally:
            await x.close()
            await y.close()
    finally:
        await limiter.close()
        await raw.aclose()


@pytest.mark.parametrize("query", ["timeout=soon", "timeout=0", "timeout=inf"])
def test_bad_url_options_are_configuration_errors_without_the_password(
    redis_server: RedisServer, query: str
) -> None:
    with pytest.raises(ConfigurationError, match="timeout") as info:
        RedisRateLimiter.from_url(RateLimit(1, shared=f"{redis_server.url}?{query}"), "t", "g")
    assert redis_server.password not in str(info.value)


async def test_a_wrong_password_or_a_closed_port_fails_start_quickly_and_masked(
    redis_server: RedisServer,
) -> None:
    wrong = "wr0ng-passw0rd"
    for url in (
        f"redis://:{wrong}@127.0.0.1:{redis_server.port}/0",
        f"redis://:{wrong}@127.0.0.1:1/0",
    ):
        limiter = RedisRateLimiter.from_url(RateLimit(5, shared=url), "t", "g")
        assert wrong not in repr(limiter)
        begun = time.monotonic()
        with pytest.raises(RateLimiterUnavailableError) as info:
            await limiter.start()
        assert time.monotonic() - begun < 5
        assert wrong not in str(info.value) and wrong not in repr(info.value)
        assert info.value.__cause__ is None and info.value.__suppress_context__
        await limiter.close()


async def test_a_silent_redis_fails_the_broker_start_within_the_timeout(
    redis_server: RedisServer, proxy: TcpProxy
) -> None:
    """A server that accepts and never answers: start fails after ``timeout``, never hangs."""
    await proxy.silence()
    broker = Broker("memory://")

    @broker.subscriber(
        "t", group="g", rate_limit=RateLimit(5, shared=f"{_via(proxy, redis_server)}?timeout=1")
    )
    async def handle(body: bytes) -> None: ...

    begun = time.monotonic()
    with pytest.raises(RateLimiterUnavailableError, match="no answer within 1s") as info:
        await broker.start()
    assert time.monotonic() - begun < 5
    assert redis_server.password not in str(info.value)
    assert not broker.connected


async def test_an_outage_pauses_consumption_and_loses_nothing(
    redis_server: RedisServer, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    topic = _name()
    broker = Broker(f"memory://{topic}")
    seen: list[str] = []

    @broker.subscriber(
        topic,
        group="g",
        concurrency=4,
        rate_limit=RateLimit(200, shared=f"{_via(proxy, redis_server)}?timeout=10"),
    )
    async def handle(message: Message) -> None:
        seen.append(message.body.decode())

    caplog.set_level(logging.INFO, logger="unimq.ratelimit")
    async with broker:
        for n in range(20):
            await broker.publish(topic, str(n))
        for _ in range(400):
            if len(seen) == 20:
                break
            await asyncio.sleep(0.05)
        assert len(seen) == 20
        await proxy.cut()
        for n in range(20, 40):
            await broker.publish(topic, str(n))
        await asyncio.sleep(2.5)
        assert len(seen) == 20  # paused: nothing ran while the budget could not be read
        await proxy.restore()
        for _ in range(600):
            if len(seen) == 40:
                break
            await asyncio.sleep(0.05)
        await broker.drain(5)
    assert sorted(seen, key=int) == [str(n) for n in range(40)]  # each once, none dropped
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "paused" in warnings[0], warnings
    assert redis_server.password not in caplog.text
    assert any("available again" in r.getMessage() for r in caplog.records)
