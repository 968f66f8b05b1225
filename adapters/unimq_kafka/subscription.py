"""The event-loop side of a consumer: :class:`KafkaSubscription` and :class:`KafkaDelivery`.

The consumer thread hands batches over with one ``call_soon_threadsafe`` each; workers pull
them with :meth:`KafkaSubscription.receive`. A delivery whose partition was revoked while it
waited in the batch is dropped at ``receive`` (its new owner gets it), which is what lets a
rebalance commit exactly what was handled here.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from typing import Any

from .consumer import ConsumerThread, Gate
from .offsets import OffsetTracker, PartitionOffsets
from .record import KafkaRecord


class KafkaDelivery(KafkaRecord):
    __slots__ = ("_settled", "_state", "_tracker")

    def __init__(self, message: Any, state: PartitionOffsets, tracker: OffsetTracker) -> None:
        super().__init__(message)
        self._state = state
        self._tracker = tracker
        self._settled = False

    async def ack(self) -> None:
        if not self._settled:
            self._settled = True
            self._tracker.ack(self._state, self._message.offset())


class KafkaSubscription:
    """Deliveries of one consumer, at most ``prefetch`` of them ahead of the workers."""

    def __init__(
        self,
        config: Mapping[str, Any],
        topics: list[str],
        *,
        prefetch: int,
        name: str,
        revoke_timeout: float,
        manual_latest: bool = False,
        gate: Gate | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._prefetch = max(1, prefetch)
        self._tracker = OffsetTracker()
        self._ready: deque[KafkaDelivery] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._handed = 0  # written by the consumer thread
        self._taken = 0  # written by the event loop
        self._stopped = False
        self._closed = False
        self.topics = topics
        self._thread = ConsumerThread(
            config,
            topics,
            tracker=self._tracker,
            handoff=self._handoff,
            space=self._space,
            name=name,
            revoke_timeout=revoke_timeout,
            manual_latest=manual_latest,
            gate=gate,
        )

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self._thread.open)
        except BaseException:
            self._thread.close()
            raise
        self._thread.start()

    # -- consumer thread -> loop -----------------------------------------------------------

    def _space(self) -> int:
        return self._prefetch - (self._handed - self._taken)

    def _handoff(self, batch: list[tuple[Any, PartitionOffsets]]) -> None:
        tracker = self._tracker
        deliveries = [KafkaDelivery(message, state, tracker) for message, state in batch]
        self._handed += len(deliveries)
        try:
            self._loop.call_soon_threadsafe(self._arrive, deliveries)
        except RuntimeError:  # loop closed
            pass

    def _arrive(self, deliveries: list[KafkaDelivery]) -> None:
        self._ready.extend(deliveries)
        waiters = self._waiters
        wake = len(deliveries)
        while wake and waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                wake -= 1

    # -- the SPI ---------------------------------------------------------------------------

    async def receive(self) -> KafkaDelivery | None:
        ready = self._ready
        tracker = self._tracker
        thread = self._thread
        while not self._stopped:
            if ready:
                delivery = ready.popleft()
                self._taken += 1
                if thread.wants_wake:
                    thread.wants_wake = False
                    thread.wake.set()
                if tracker.take(delivery._state):
                    return delivery
                continue
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._waiters.append(waiter)
            await waiter
        return None

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._thread.stop()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    async def close(self) -> None:
        await self.stop()
        if self._closed:
            return
        self._closed = True
        self._thread.close()
        await asyncio.to_thread(self._thread.done.wait)
