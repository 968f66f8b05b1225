"""A subscriber's rate limit as the runtime uses it: take tokens, wait, ride out outages.

Before a handler starts (a batch: before its call, one token per message) the runtime asks its
:class:`Throttle` for admission. The throttle takes the tokens from the subscriber's
:class:`~unimq.ratelimit.RateLimiter` (the local token bucket, or a shared one in Redis) and
waits as long as the limiter says, through the runtime's ``pause`` (parked on a VirtualClock,
cancelled when the subscriber stops: the message then stays unacked and goes back to the
broker).

When a shared limiter's store is unreachable, the limiter raises
:class:`~unimq.errors.RateLimiterUnavailableError`; admission then pauses and asks again every
``retry_after`` seconds. Consumption pauses, nothing is dropped and nothing runs over budget:
the deliveries already received wait unacked, the workers do not receive more, and the broker
keeps the backlog. One WARNING when an outage starts, one INFO when it ends.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from ..clock import Clock
from ..errors import RateLimiterUnavailableError
from ..instrumentation import Listeners
from ..ratelimit import RateLimit, RateLimiter, open_limiter
from ..url import redact

logger = logging.getLogger("unimq.ratelimit")

Pause = Callable[[float], Awaitable[bool]]

#: How long to pause before asking again when a limiter fails with something other than
#: RateLimiterUnavailableError (a bug in a third-party limiter must not drop messages either).
RETRY_AFTER = 1.0


class Throttle:
    """Admission of one subscriber's handler starts through its rate limiter."""

    def __init__(
        self, limit: RateLimit, clock: Clock, listeners: Listeners, topic: str, group: str
    ) -> None:
        self.limit = limit
        self.limiter: RateLimiter = open_limiter(limit, clock, topic, group)
        self._clock = clock
        self._listeners = listeners
        self._topic = topic
        self._group = group
        self._held_until = float("-inf")  # when the last reserved wait ends (for ``held``)
        self._outage_since: float | None = None

    async def start(self) -> None:
        await self.limiter.start()

    async def close(self) -> None:
        await self.limiter.close()

    async def admit(self, tokens: int, pause: Pause) -> bool:
        """Take ``tokens`` and wait until they may start; ``False`` when the subscriber stopped
        meanwhile (nothing may start then)."""
        while True:
            try:
                wait = await self.limiter.acquire(tokens)
            except RateLimiterUnavailableError as exc:
                retry_after = exc.retry_after
                self._unavailable(str(exc), retry_after)
            except Exception as exc:
                retry_after = RETRY_AFTER
                self._unavailable(f"{type(exc).__name__}: {redact(str(exc))}", retry_after)
            else:
                break
            if not await pause(retry_after):
                return False
        now = self._clock.now()
        if self._outage_since is not None:
            logger.info(
                "the rate limit of %r (group %r) is available again after %.1fs; "
                "handler starts resume",
                self._topic,
                self._group,
                now - self._outage_since,
            )
            self._outage_since = None
        held = 0.0
        if wait > 0:
            end = now + wait
            held = max(0.0, end - max(now, self._held_until))
            self._held_until = max(self._held_until, end)
        if self._listeners:
            self._listeners.rate_limited(self._topic, self._group, tokens, wait, held)
        return not wait or await pause(wait)

    def _unavailable(self, reason: str, retry_after: float) -> None:
        if self._outage_since is not None:
            return
        self._outage_since = self._clock.now()
        logger.warning(
            "the rate limit of %r (group %r) cannot be consulted: %s; handler starts are paused "
            "(messages stay with the broker, none is dropped), asking again every %gs",
            self._topic,
            self._group,
            reason,
            retry_after,
        )
