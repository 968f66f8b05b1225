"""Time, behind an interface so tests can replace it (``unimq.testing.VirtualClock``).

Everything in unimq that waits on the calendar (delayed delivery on the memory backend, retry
backoff, in-place retries of ordered subscribers) asks the broker's clock, never ``time``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    #: How many ``sleep`` calls are in progress: unimq sleeps on the clock only to hold a
    #: delivery until it is due (an ordered subscriber's in-place backoff), and such a delivery
    #: counts as delayed rather than in flight when ``Broker.drain`` decides the backend is idle.
    sleeping: int

    def now(self) -> float:
        """Wall-clock time as epoch seconds (what ``unimq-deliver-at`` is measured in)."""

    async def sleep(self, seconds: float) -> None: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` on the event loop at epoch time ``when``."""


class SystemClock:
    """The real clock."""

    def __init__(self) -> None:
        self.sleeping = 0

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        self.sleeping += 1
        try:
            await asyncio.sleep(max(0.0, seconds))
        finally:
            self.sleeping -= 1

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        loop = asyncio.get_running_loop()
        return loop.call_later(max(0.0, when - time.time()), callback)
