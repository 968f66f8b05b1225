"""Idempotent handlers: remember which message ids a group handled successfully.

The contract (docs/semantics.md): the mark is written only after the handler succeeded, and a
duplicate that arrives while the first copy is still running waits for that run's outcome (an
in-progress *lease*), so concurrent duplicates run the handler once. A lease expires after
``lease`` seconds so that a crashed holder cannot block a message forever.

Stores are pluggable; this module has the protocol and the in-process store. Durable stores
(Redis, SQL) live in ``contrib/`` and register through the ``unimq_register_idempotency_stores``
hook.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Protocol, runtime_checkable

from .errors import ConfigurationError
from .settings import positive_seconds

#: How long the memory store remembers a handled message id: 7 days, as the Redis store.
DEFAULT_TTL = 7 * 86400.0


@runtime_checkable
class IdempotencyStore(Protocol):
    async def begin(self, group: str, message_id: str, lease: float) -> bool:
        """Claim ``message_id`` for ``group``.

        Returns True when the caller now holds the lease and must run the handler, then call
        :meth:`complete` (success) or :meth:`release` (failure). Returns False when the id was
        already handled successfully. Waits while another holder's lease is live.
        """

    async def complete(self, group: str, message_id: str) -> None:
        """Record a success (and drop the lease)."""

    async def release(self, group: str, message_id: str) -> None:
        """Drop the lease without recording anything (the run failed)."""


class _Lease:
    __slots__ = ("done", "expires")

    def __init__(self, expires: float) -> None:
        self.expires = expires
        self.done = asyncio.Event()


class MemoryIdempotencyStore:
    """Marks kept in this process for ``ttl`` seconds (default 7 days, as the Redis store), at
    most ``max_entries`` of them (default 100,000, about 25 MB; the oldest are forgotten first).

    Good for tests and for single-process services; marks do not survive a restart and are not
    shared between processes (use the Redis or SQL store for that). Marks are kept in completion
    order, so expired ones are always at the front: each ``complete`` drops up to two of them
    (amortized O(1), nothing scanned on the hot path), and ``begin`` ignores an expired mark it
    meets.
    """

    def __init__(self, max_entries: int = 100_000, ttl: float = DEFAULT_TTL) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigurationError(f"max_entries must be an integer >= 1, got {max_entries!r}")
        self._ttl = positive_seconds(ttl, "ttl")
        self._done: OrderedDict[tuple[str, str], float] = OrderedDict()  # key -> expiry
        self._leases: dict[tuple[str, str], _Lease] = {}
        self._max_entries = max_entries

    def __len__(self) -> int:
        """How many completed marks are held (expired ones not yet pruned included)."""
        return len(self._done)

    async def begin(self, group: str, message_id: str, lease: float) -> bool:
        key = (group, message_id)
        while True:
            now = time.monotonic()
            expires = self._done.get(key)
            if expires is not None:
                if expires > now:
                    return False
                del self._done[key]
            holder = self._leases.get(key)
            if holder is None or holder.expires <= now:
                self._leases[key] = _Lease(now + lease)
                return True
            try:
                await asyncio.wait_for(holder.done.wait(), holder.expires - now)
            except asyncio.TimeoutError:
                continue

    async def complete(self, group: str, message_id: str) -> None:
        key = (group, message_id)
        now = time.monotonic()
        done = self._done
        done.pop(key, None)  # re-added at the end: expiries stay in order
        done[key] = now + self._ttl
        if len(done) > self._max_entries:
            done.popitem(last=False)
        for _ in range(2):  # amortized pruning of expired marks, oldest first
            if next(iter(done.values())) > now:
                break
            done.popitem(last=False)
        self._drop_lease(key)

    async def release(self, group: str, message_id: str) -> None:
        self._drop_lease((group, message_id))

    def _drop_lease(self, key: tuple[str, str]) -> None:
        holder = self._leases.pop(key, None)
        if holder is not None:
            holder.done.set()


class LeaseTokens:
    """Which lease token each task holds, for durable stores (Redis, SQL).

    A durable store claims a lease by writing a random token, and releases it only if the
    token is still its own (another process may have taken over an expired lease). The
    pipeline calls ``begin`` and ``complete``/``release`` from the same task, so tokens are
    remembered per (group, id) and per task; a release from another task takes the only token
    held, if there is exactly one.
    """

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], dict[object, str]] = {}

    def remember(self, group: str, message_id: str, token: str) -> None:
        self._held.setdefault((group, message_id), {})[_current_task()] = token

    def take(self, group: str, message_id: str) -> str | None:
        """Forget and return the token this task claimed (see the class docstring)."""
        key = (group, message_id)
        held = self._held.get(key)
        if not held:
            return None
        owner = _current_task()
        if owner in held:
            token = held.pop(owner)
        elif len(held) == 1:
            token = held.popitem()[1]
        else:
            return None
        if not held:
            del self._held[key]
        return token


def _current_task() -> object:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None
