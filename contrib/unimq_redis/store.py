"""``RedisIdempotencyStore``: idempotency marks and in-progress leases in Redis.

One key per ``(group, message id)``, ``<prefix><group>:<message id>`` (the group is
percent-encoded, so a ``:`` in it cannot make two keys collide). Its value is either

- ``run:<token>`` with a ``PX <lease>`` expiry: a consumer holds the in-progress lease;
  ``<token>`` is random per claim, so only the claimer can release it;
- ``done`` with an ``EX <ttl>`` expiry (7 days by default): the message was handled.

``begin`` is ``SET key run:<token> NX PX <lease>``; when the key exists it reads it in the
same server-side script (one round trip, atomic): ``done`` means "already handled", a live
lease means "wait": the caller polls with a growing pause (10 ms up to 250 ms, never past the
lease's remaining time) and tries again. An expired lease is simply gone from Redis, so the
next ``SET NX`` wins. ``complete`` is ``SET key done EX <ttl>``; ``release`` deletes the key
only if it still holds this claimer's token (compare-and-delete in a script), so a holder
whose lease expired cannot drop the lease of the consumer that took over.

What survives a crash is described in docs/idempotency-stores.md: with this store, a crash
between the handler's side effect and ``complete`` means the message runs again once the
lease expires (at-least-once).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from types import TracebackType
from typing import Any, cast
from urllib.parse import quote

import redis.asyncio as redis

from unimq.errors import ConfigurationError
from unimq.idempotency import LeaseTokens
from unimq.url import redact

from . import urls

DEFAULT_TTL = 7 * 24 * 3600.0
DEFAULT_PREFIX = "unimq:idem:"
DONE = "done"

# KEYS[1] = key; ARGV = token, lease in ms, done marker.
# Returns {1, 0}: claimed; {2, 0}: already handled; {0, pttl}: someone else's live lease.
_BEGIN = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, 0}
end
if redis.call('GET', KEYS[1]) == ARGV[3] then
  return {2, 0}
end
return {0, redis.call('PTTL', KEYS[1])}
"""

# KEYS[1] = key; ARGV[1] = token. Deletes the key only if it still holds our token.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_WHAT = "redis idempotency store"
_FIRST_PAUSE = 0.01
_MAX_PAUSE = 0.25


class RedisIdempotencyStore:
    """Idempotency marks in Redis, shared by every process that uses the same server.

    Build it from a URL (what ``Broker(..., idempotency_store="redis://...")`` does)::

        store = RedisIdempotencyStore.from_url("redis://:password@cache:6379/0?ttl=86400")

    or around a ``redis.asyncio.Redis`` client you already have (the store then does not close
    it)::

        store = RedisIdempotencyStore(client, ttl=86400, prefix="orders:idem:")

    ``ttl`` (seconds, default 7 days) is how long a "handled" mark is kept: a duplicate that
    arrives later than that runs again. ``prefix`` starts every key.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        ttl: float = DEFAULT_TTL,
        prefix: str = DEFAULT_PREFIX,
        owns_client: bool = False,
        shown_as: str | None = None,
    ) -> None:
        if not ttl > 0:
            raise ConfigurationError(f"redis idempotency store: ttl must be > 0 seconds, got {ttl}")
        self._client = client
        self.ttl = float(ttl)
        self.prefix = prefix
        self._owns_client = owns_client
        self._shown_as = shown_as or urls.describe(client)
        self._begin_script = client.register_script(_BEGIN)
        self._release_script = client.register_script(_RELEASE)
        # The token of each lease this instance holds, for release(): per (group, id), per
        # claiming task, so that a holder whose lease expired cannot release the lease that
        # another task of this process took over.
        self._tokens = LeaseTokens()

    @classmethod
    def from_url(cls, url: str) -> RedisIdempotencyStore:
        """``redis://[:password@]host[:port][/db]?ttl=<seconds>&prefix=<text>`` (or ``rediss://``
        for TLS). Other query parameters go to the redis client (``socket_timeout=5``, ...)."""
        client_url, mine, shown_url = urls.split(url, _WHAT, ("ttl", "prefix"))
        ttl = DEFAULT_TTL
        if "ttl" in mine:
            try:
                ttl = float(mine["ttl"])
            except ValueError:
                ttl = -1.0
            if not ttl > 0:
                raise ConfigurationError(
                    f"{_WHAT} {redact(url)!r}: ttl must be a number of seconds > 0, "
                    f"got {mine['ttl']!r}"
                )
        prefix = mine.get("prefix", DEFAULT_PREFIX)
        client = urls.client(client_url, url, _WHAT)
        return cls(client, ttl=ttl, prefix=prefix, owns_client=True, shown_as=shown_url)

    def key(self, group: str, message_id: str) -> str:
        """The Redis key that holds the mark or lease of ``message_id`` in ``group``."""
        return f"{self.prefix}{quote(group, safe='')}:{message_id}"

    async def begin(self, group: str, message_id: str, lease: float) -> bool:
        key = self.key(group, message_id)
        token = f"run:{uuid.uuid4().hex}"
        lease_ms = max(1, round(lease * 1000))
        pause = _FIRST_PAUSE
        while True:
            reply = await cast(
                "Awaitable[list[int]]",
                self._begin_script(keys=[key], args=[token, lease_ms, DONE]),
            )
            status, remaining_ms = int(reply[0]), int(reply[1])
            if status == 1:
                self._tokens.remember(group, message_id, token)
                return True
            if status == 2:
                return False
            # Another consumer's lease is live: wait a little (never past its expiry), retry.
            wait = pause if remaining_ms <= 0 else min(pause, remaining_ms / 1000)
            await asyncio.sleep(wait)
            pause = min(pause * 2, _MAX_PAUSE)

    async def complete(self, group: str, message_id: str) -> None:
        self._tokens.take(group, message_id)
        await cast(
            "Awaitable[Any]",
            self._client.set(self.key(group, message_id), DONE, px=round(self.ttl * 1000)),
        )

    async def release(self, group: str, message_id: str) -> None:
        token = self._tokens.take(group, message_id)
        if token is None:
            return  # not ours (or already completed/released)
        await cast(
            "Awaitable[Any]",
            self._release_script(keys=[self.key(group, message_id)], args=[token]),
        )

    async def close(self) -> None:
        """Close the connection pool, if this store created the client (``from_url``)."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> RedisIdempotencyStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:  # never the password
        return (
            f"RedisIdempotencyStore({self._shown_as!r}, prefix={self.prefix!r}, ttl={self.ttl:g})"
        )
