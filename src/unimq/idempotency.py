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
