"""``RedisRateLimiter``: one token bucket in Redis that every instance of a subscriber shares.

``rate_limit=unimq.RateLimit(200, per=1.0, shared="redis://:pw@cache:6379/0")`` on a subscriber
that runs in N processes caps their handler starts at 200 per second *together*. The bucket is
one hash, ``<prefix><topic>:<group>`` (``unimq:rate:`` by default; ``?key=name`` names the
budget instead, so different subscribers can share one), updated by one Lua script (atomic on
the server, one round trip per handler start, or per batch):

- the level refills at ``rate / per`` tokens per second of the *Redis server's* clock
  (``TIME``), so the instances' clocks never matter, up to ``burst`` (default ``rate``);
- a caller takes its tokens even when the level goes below zero, and is told how long to wait
  for the refill to cover it (the same reservation rule as the local bucket): callers are
  served in the order Redis runs their scripts, nobody polls, and the long-run rate is exact;
- the key expires once the bucket would be full again, so idle budgets leave nothing behind.

Every instance must be given the same ``RateLimit`` (each call refills at its caller's rate).

Why a script and not a library: ``limits`` and ``pyrate-limiter`` (both maintained, both with
Redis backends) answer "allowed or not" for fixed or sliding windows, so a caller must poll
and a window allows two windows' worth at its boundary; neither returns a wait for a reserved
token, which is what back-pressure at an exact rate needs. The script is 20 lines.

Redis unreachable: at broker start, :class:`~unimq.errors.RateLimiterUnavailableError` (within
``timeout``, 5 s by default: never a hang). While consuming, each call that fails raises it
too, and the runtime pauses the subscriber's handler starts and asks again each second
(messages stay with the broker; see :mod:`unimq.delivery.throttle`). Requires Redis 5 or later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import cast
from urllib.parse import quote

import redis.asyncio as redis

from unimq.errors import ConfigurationError, RateLimiterUnavailableError
from unimq.ratelimit import RateLimit

from . import urls

DEFAULT_PREFIX = "unimq:rate:"
DEFAULT_TIMEOUT = 5.0
#: How long a subscriber pauses before asking an unreachable Redis again.
RETRY_AFTER = 1.0
WHAT = "redis rate limiter"

# KEYS[1] = the bucket; ARGV = rate per second, capacity, tokens.
# Returns the seconds the caller waits before starting its tokens ("0": now), as a string
# (a Lua number would come back truncated to an integer).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rate = tonumber(ARGV[1]) / 1000000
local capacity = tonumber(ARGV[2])
local level = capacity
local state = redis.call('HMGET', KEYS[1], 'level', 'at')
if state[1] and state[2] then
  local elapsed = math.max(0, now - tonumber(state[2]))
  level = math.min(capacity, tonumber(state[1]) + elapsed * rate)
end
level = level - tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'level', string.format('%.17g', level),
           'at', string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - level) / rate / 1000) + 1000)
if level >= 0 then
  return '0'
end
return string.format('%.17g', -level / rate / 1000000)
"""


class RedisRateLimiter:
    """A shared token bucket (see the module docstring); a
    :class:`~unimq.ratelimit.RateLimiter`.

    Built by the broker from ``RateLimit(shared=url)`` (:meth:`from_url`), or around a
    ``redis.asyncio.Redis`` client you already have (which it then does not close).
    """

    def __init__(
        self,
        client: redis.Redis,
        limit: RateLimit,
        key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        owns_client: bool = False,
        shown_as: str | None = None,
    ) -> None:
        self._client = client
        self.limit = limit
        self.key = key
        self.timeout = timeout
        self._owns_client = owns_client
        self._shown_as = shown_as or urls.describe(client)
        self._url = limit.shared or ""
        self._script = client.register_script(_ACQUIRE)
        self._args = (repr(limit.per_second), repr(limit.capacity))

    @classmethod
    def from_url(cls, limit: RateLimit, topic: str, group: str) -> RedisRateLimiter:
        """``limit.shared`` is ``redis://[:password@]host[:port][/db]`` (``rediss://`` for TLS)
        with optional ``?key=<budget name>&prefix=<text>&timeout=<seconds>``; other query
        parameters go to the redis client. The budget is ``(topic, group)``'s unless ``key``
        names one."""
        url = limit.shared
        if url is None:
            raise ConfigurationError(f"{WHAT}: RateLimit.shared is not set")
        client_url, mine, shown = urls.split(url, WHAT, ("key", "prefix", "timeout"))
        timeout = DEFAULT_TIMEOUT
        if "timeout" in mine:
            try:
                timeout = float(mine["timeout"])
            except ValueError:
                timeout = -1.0
            if not 0 < timeout < float("inf"):
                raise ConfigurationError(
                    f"{WHAT} {shown!r}: timeout must be a number of seconds > 0, "
                    f"got {mine['timeout']!r}"
                )
        prefix = mine.get("prefix", DEFAULT_PREFIX)
        name = mine.get("key") or f"{quote(topic, safe='')}:{quote(group, safe='')}"
        # Without these, redis-py 5 waits on a silent server for ever.
        per_call = min(timeout, 2.0)
        client = urls.client(
            client_url, url, WHAT, socket_timeout=per_call, socket_connect_timeout=per_call
        )
        return cls(
            client,
            limit,
            prefix + name,
            timeout=timeout,
            owns_client=True,
            shown_as=f"{shown} key {prefix + name}",
        )

    async def start(self) -> None:
        """Check that Redis answers and runs the script (taking no token): a wrong URL, a
        wrong password or a server that is down fails the broker's start, within ``timeout``."""
        await self._call(0)

    async def acquire(self, tokens: int) -> float:
        return await self._call(tokens)

    async def _call(self, tokens: int) -> float:
        try:
            reply = await asyncio.wait_for(
                cast("Awaitable[bytes]", self._script(keys=[self.key], args=[*self._args, tokens])),
                self.timeout,
            )
            return max(0.0, float(reply))
        except asyncio.TimeoutError:
            reason = f"no answer within {self.timeout:g}s"
        except (redis.RedisError, OSError, ValueError) as exc:
            reason = f"{type(exc).__name__}: {urls.mask(str(exc), self._url)}"
        raise RateLimiterUnavailableError(
            f"{WHAT} {self._shown_as!r} cannot be reached: {reason}", retry_after=RETRY_AFTER
        ) from None

    async def close(self) -> None:
        """Close the connection pool, if this limiter created the client (``from_url``)."""
        if self._owns_client:
            await self._client.aclose()

    def __repr__(self) -> str:  # never the password
        return f"RedisRateLimiter({self._shown_as!r}, {self.limit!r})"
