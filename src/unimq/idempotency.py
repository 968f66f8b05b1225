"""Idempotent handlers: remember which message ids a group handled successfully.

The contract (DESIGN.md section 2): the mark is written only after the handler succeeded, and a
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
    """Marks kept in this process, oldest forgotten first beyond ``max_entries``.

    Good for tests and for single-process services; marks do not survive a restart and are not
    shared between processes (use the Redis or SQL store for that).
    """

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self._done: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._leases: dict[tuple[str, str], _Lease] = {}
        self._max_entries = max_entries

    async def begin(self, group: str, message_id: str, lease: float) -> bool:
        key = (group, message_id)
        while True:
            if key in self._done:
                return False
            holder = self._leases.get(key)
            now = time.monotonic()
            if holder is None or holder.expires <= now:
                self._leases[key] = _Lease(now + lease)
                return True
            try:
                await asyncio.wait_for(holder.done.wait(), holder.expires - now)
            except asyncio.TimeoutError:
                continue

    async def complete(self, group: str, message_id: str) -> None:
        key = (group, message_id)
        self._done[key] = None
        if len(self._done) > self._max_entries:
            self._done.popitem(last=False)
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
