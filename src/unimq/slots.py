"""A counting limit with a synchronous fast path.

``asyncio.Semaphore`` costs two coroutine calls per use even when a slot is free; the delivery
pipeline takes one per message, so it uses this instead: ``take_now()`` succeeds without
awaiting whenever a slot is free, ``take()`` waits (FIFO) otherwise.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Slots:
    __slots__ = ("_waiters", "free")

    def __init__(self, count: int) -> None:
        self.free = count
        self._waiters: deque[asyncio.Future[None]] = deque()

    def take_now(self) -> bool:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def take(self) -> None:
        if self.take_now():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # give() handed its slot straight to us
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give()  # the slot arrived as we were cancelled: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def take_anyway(self) -> None:
        """Take a slot even when none is free (a bounded overshoot, e.g. deliveries a batch
        receive already holds): the next ``give`` repays it before waking a waiter."""
        self.free -= 1

    def take_many_anyway(self, count: int) -> None:
        """``count`` times (``take_now()`` or else ``take_anyway()``), in one step: either takes
        one slot, free or overshooting, so together they take ``count``."""
        self.free -= count

    def give_many(self, count: int) -> None:
        """``count`` times ``give``: repays the overshoot, then wakes waiters, then frees."""
        if self.free < 0:
            repaid = min(count, -self.free)
            self.free += repaid
            count -= repaid
        waiters = self._waiters
        while count and waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                count -= 1
        self.free += count

    def give(self) -> None:
        if self.free < 0:
            self.free += 1
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1
