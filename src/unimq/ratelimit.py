"""Flow control: at most ``rate`` handler starts per ``per`` seconds (peak shaving).

A token bucket on the broker's clock: a subscriber with ``rate_limit=RateLimit(200, per=1.0)``
takes one token before each handler start (a batch takes one per message) and waits when the
bucket is empty. Waiting is back-pressure, never a drop: a worker that waits does not receive,
so the broker keeps the backlog (and, on a VirtualClock, 1,000 messages at 100/s take exactly
10 virtual seconds). ``burst`` (default: one period's worth, ``rate``) is how many may start at
once after a quiet spell.

``shared="redis://..."`` puts the bucket in a store that every instance of the subscriber
uses, so N processes share one budget. The store is a plugin registered by URL scheme (the
``unimq_register_rate_limiters`` hook; ``unimq_redis`` registers ``redis://`` and
``rediss://``) behind the small :class:`RateLimiter` interface the runtime uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .clock import Clock
from .errors import ConfigurationError
from .url import redact

if TYPE_CHECKING:
    from .plugins import RateLimiterFactory


@dataclass(frozen=True)
class RateLimit:
    """``rate`` handler starts per ``per`` seconds, with bursts of up to ``burst``; with
    ``shared`` (a URL such as ``redis://:password@cache:6379/0``) every instance of the
    subscriber takes its tokens from one bucket in that store."""

    rate: float
    per: float = 1.0
    burst: int | None = None
    shared: str | None = None

    def __post_init__(self) -> None:
        for name in ("rate", "per"):
            value = getattr(self, name)
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ConfigurationError(f"RateLimit.{name} must be a number > 0, got {value!r}")
        burst = self.burst
        if burst is not None and (
            not isinstance(burst, int) or isinstance(burst, bool) or burst < 1
        ):
            raise ConfigurationError(f"RateLimit.burst must be an integer >= 1, got {burst!r}")
        shared = self.shared
        if shared is not None and (
            not isinstance(shared, str) or "://" not in shared or not shared.split("://")[0]
        ):
            # Not echoed: a malformed URL may still hold a password that redact cannot find.
            got = "a string without '<scheme>://'" if isinstance(shared, str) else repr(shared)
            raise ConfigurationError(
                f"RateLimit.shared must be a store URL such as 'redis://host:6379/0', got {got}"
            )

    @property
    def per_second(self) -> float:
        return self.rate / self.per

    @property
    def capacity(self) -> float:
        return float(self.burst if self.burst is not None else max(1.0, self.rate))

    @property
    def scheme(self) -> str | None:
        """The shared store's URL scheme (``"redis"``), or ``None`` for a local bucket."""
        return None if self.shared is None else self.shared.split("://", 1)[0].lower()

    def __repr__(self) -> str:  # never the store's password
        shared = "" if self.shared is None else f", shared={redact(self.shared)!r}"
        return f"RateLimit(rate={self.rate!r}, per={self.per!r}, burst={self.burst!r}{shared})"


@runtime_checkable
class RateLimiter(Protocol):
    """What a subscriber's runtime takes its tokens from (one per subscriber and broker).

    ``acquire(tokens)`` takes ``tokens`` and returns how many seconds the caller must wait
    before starting them (0: start now). Callers are served in order: a caller that has to wait
    has its tokens reserved, so the long-run rate is exact. When the budget cannot be consulted
    (its store is unreachable) it raises :class:`~unimq.errors.RateLimiterUnavailableError`
    without taking anything, and the runtime pauses and asks again: consumption pauses, no
    message is dropped. ``start()`` runs when the broker starts (a shared limiter checks its
    store there, so a wrong URL fails the start); ``close()`` when it stops.
    """

    async def start(self) -> None: ...

    async def acquire(self, tokens: int) -> float: ...

    async def close(self) -> None: ...


class TokenBucket:
    """The local bucket of one subscriber. Not thread-safe: used on the event loop only.

    Waiters are served in order: each reserves its tokens (the level may go negative) and sleeps
    until the refill covers its reservation, so concurrent workers never overtake each other and
    the long-run rate is exact.
    """

    def __init__(self, limit: RateLimit, clock: Clock) -> None:
        self.limit = limit
        self._clock = clock
        self._rate = limit.per_second
        self._capacity = limit.capacity
        self._level = self._capacity
        self._updated = clock.now()

    def reserve(self, tokens: int = 1) -> float:
        """Take ``tokens``; returns how long to wait (on the clock) before starting: 0 if now."""
        now = self._clock.now()
        self._level = min(self._capacity, self._level + (now - self._updated) * self._rate)
        self._updated = now
        self._level -= tokens
        if self._level >= 0:
            return 0.0
        return -self._level / self._rate

    async def start(self) -> None:
        """Nothing to connect."""

    async def acquire(self, tokens: int) -> float:
        return self.reserve(tokens)

    async def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"TokenBucket({self.limit!r})"


def check_shared(limit: RateLimit) -> None:
    """Raise :class:`ConfigurationError` when no installed plugin serves ``limit.shared``'s
    scheme (at subscribe time, before anything connects)."""
    if limit.scheme is not None:
        _factory(limit)


def open_limiter(limit: RateLimit, clock: Clock, topic: str, group: str) -> RateLimiter:
    """The limiter for one subscriber: a local :class:`TokenBucket`, or the shared store's
    limiter for ``(topic, group)`` (not started yet)."""
    if limit.scheme is None:
        return TokenBucket(limit, clock)
    return _factory(limit)(limit, topic, group)


def _factory(limit: RateLimit) -> RateLimiterFactory:
    from .plugins import rate_limiter_registry  # the plugins load on first use

    return rate_limiter_registry().get(limit)
