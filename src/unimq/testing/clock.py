"""A virtual clock for tests: delays and backoffs fire when the test says so, not in real time."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable


class _Timer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock:
    """``Broker("memory://", clock=VirtualClock())`` runs delays and backoffs on virtual time.

    ``await clock.advance(seconds)`` moves time forward, firing everything that becomes due in
    order, and after each step waits until the memory backends on this clock are idle again, so
    a retry scheduled by a handler that ran in the same window also fires within that call.
    """

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else float(start)
        self._timers: list[tuple[float, int, _Timer]] = []
        self._sequence = itertools.count()
        self._idle_probes: list[Callable[[], Awaitable[None]]] = []

    def now(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(when, callback)
        heapq.heappush(self._timers, (when, next(self._sequence), timer))
        return timer

    async def sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not woken.done():
                woken.set_result(None)

        timer = self.call_at(self._now + max(0.0, seconds), wake)
        try:
            await woken
        finally:
            timer.cancel()

    def register_idle_probe(self, probe: Callable[[], Awaitable[None]]) -> None:
        """Called by a memory backend when it connects: ``probe()`` returns once it is idle."""
        self._idle_probes.append(probe)

    def unregister_idle_probe(self, probe: Callable[[], Awaitable[None]]) -> None:
        """Called by a memory backend when it closes (one registration per call)."""
        try:
            self._idle_probes.remove(probe)
        except ValueError:
            pass

    async def advance(self, seconds: float) -> None:
        """Move virtual time ``seconds`` forward, firing due timers and letting their work run."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        target = self._now + seconds
        await self._settle()
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._now = max(self._now, when)
            timer.callback()
            await self._settle()
        self._now = target
        await self._settle()

    @property
    def pending(self) -> int:
        """Timers not yet fired (delayed messages, backoffs)."""
        return sum(1 for _, _, timer in self._timers if not timer.cancelled)

    async def _settle(self) -> None:
        for _ in range(3):
            await asyncio.sleep(0)
        for probe in list(self._idle_probes):
            await probe()
