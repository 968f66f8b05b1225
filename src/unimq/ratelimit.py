"""Flow control: at most ``rate`` handler starts per ``per`` seconds (peak shaving).

A token bucket on the broker's clock: a subscriber with ``rate_limit=RateLimit(200, per=1.0)``
takes one token before each handler start (a batch takes one per message) and waits when the
bucket is empty. Waiting is back-pressure, never a drop: a worker that waits does not receive,
so the broker keeps the backlog (and, on a VirtualClock, 1,000 messages at 100/s take exactly
10 virtual seconds). ``burst`` (default: one period's worth, ``rate``) is how many may start at
once after a quiet spell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .clock import Clock
from .errors import ConfigurationError


@dataclass(frozen=True)
class RateLimit:
    """``rate`` handler starts per ``per`` seconds, with bursts of up to ``burst``."""

    rate: float
    per: float = 1.0
    burst: int | None = None

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

    @property
    def per_second(self) -> float:
        return self.rate / self.per

    @property
    def capacity(self) -> float:
        return float(self.burst if self.burst is not None else max(1.0, self.rate))


class TokenBucket:
    """The bucket of one subscriber. Not thread-safe: used on the event loop only.

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
        self.throttled_seconds = 0.0  # total time handler starts waited (for metrics)

    def reserve(self, tokens: int = 1) -> float:
        """Take ``tokens``; returns how long to wait (on the clock) before starting: 0 if now."""
        now = self._clock.now()
        self._level = min(self._capacity, self._level + (now - self._updated) * self._rate)
        self._updated = now
        self._level -= tokens
        if self._level >= 0:
            return 0.0
        wait = -self._level / self._rate
        self.throttled_seconds += wait
        return wait
