"""The event-loop side of a consumer: :class:`KafkaSubscription` and :class:`KafkaDelivery`.

The consumer thread reads ahead into its buffer and notifies the loop (one
``call_soon_threadsafe`` per batch read, at most one pending); workers pull deliveries with
:meth:`KafkaSubscription.receive`, which refills the loop's queue from that buffer in one batch
whenever the queue runs dry (so a busy consumer never waits for the thread). A delivery whose
partition was revoked while it waited in the queue is dropped at ``receive`` (its new owner
gets it), which is what lets a rebalance commit exactly what was handled here.

A delivery already handed to a worker (waiting in a per-key lane, or between in-place retries)
when its partition is revoked or lost turns ``revoked`` (:class:`~unimq.transport.
SupportsRevocation`): the core then drops it instead of running its handler, so the old owner
never races the new one, which re-reads it from the committed offset.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from itertools import repeat
from typing import Any

from .consumer import ConsumerThread, Gate
from .headers import PACKED, from_wire
from .offsets import OffsetTracker, PartitionOffsets, TopicPartition
from .record import KafkaRecord, decode_headers

READ_AHEAD = 500
#: How long ``close`` waits for the consumer thread to leave the group and exit.
CLOSE_TIMEOUT = 30.0

logger = logging.getLogger("unimq.kafka")


class KafkaDelivery(KafkaRecord):
    """A delivery of a :class:`KafkaSubscription`. Each subscription makes its own subclass
    (:func:`delivery_class`) that carries its offset tracker and consumer as class
    attributes: a delivery is built once per message, so it holds only its record and its
    partition's state, and a batch's ``ack_many`` (called per class by the core) needs no
    grouping by consumer."""

    # What the core reads of every delivery is read from the record once, when it is handed
    # out (:meth:`hand_out`, the only way a delivery is made), into plain attributes (they
    # shadow KafkaRecord's properties): one Python call per message instead of one per
    # attribute read. ``_offset`` keeps the
    # offset the tracker was told, so acks need no call into the record.
    __slots__ = ("_offset", "_settled", "_state", "body", "headers", "key", "topic")

    _state: PartitionOffsets
    _offset: int
    _settled: bool
    topic: str
    body: bytes
    key: str | None
    headers: dict[str, str]

    _tracker: OffsetTracker | None = None
    _source: ConsumerThread | None = None

    @classmethod
    def hand_out(
        cls, messages: list[Any], parts: Mapping[TopicPartition, PartitionOffsets]
    ) -> list[KafkaDelivery]:
        """The deliveries of ``messages`` (consumed records, in offset order within a
        partition) whose partitions are in ``parts``, each registered there as handed out;
        the tracker's lock is held by the caller (:meth:`OffsetTracker.handed_locked`).

        The per-record cost of the whole consume path sits here, so it is one loop: the
        partition's state is looked up once per run of records of one partition (as
        librdkafka's fetches hand them out), a delivery's slots are set without an
        ``__init__`` call, and the headers of a plain unimq publish (exactly four, valid
        UTF-8) are decoded inline; anything else goes through :func:`.record.decode_headers`
        (tests/test_kafka_delivery.py holds both ways equal to it)."""
        out: list[KafkaDelivery] = []
        add = out.append
        new = _new
        last_topic: str | None = None
        last_partition = -1
        state: PartitionOffsets | None = None
        hand = None
        for message in messages:
            partition = message.partition()
            topic = message.topic()
            if partition != last_partition or topic != last_topic:
                last_topic, last_partition = topic, partition
                state = parts.get((topic, partition))
                hand = state.handed.append if state is not None else None
            if hand is None:
                continue  # not assigned (any more): not ours to hand out
            offset = message.offset()
            hand(offset)
            delivery = new(cls)
            delivery._message = message
            delivery._state = state  # type: ignore[assignment]
            delivery._offset = offset
            delivery._settled = False
            delivery.topic = topic
            value = message.value()
            delivery.body = value if value is not None else b""
            key = message.key()
            if key is None:
                delivery.key = None
            else:
                try:
                    delivery.key = key.decode()
                except UnicodeDecodeError:
                    delivery.key = key.decode("utf-8", "replace")
            raw = message.headers()
            if raw is not None and len(raw) == 4:
                try:
                    (a, a_value), (b, b_value), (c, c_value), (d, d_value) = raw
                    headers = {
                        a: a_value.decode(),
                        b: b_value.decode(),
                        c: c_value.decode(),
                        d: d_value.decode(),
                    }
                except (AttributeError, UnicodeDecodeError):
                    headers = decode_headers(raw)
                else:
                    if PACKED in headers:
                        from_wire(headers)
                delivery.headers = headers
            else:
                delivery.headers = decode_headers(raw)
            add(delivery)
        return out

    @property
    def native_id(self) -> str:
        return f"{self.topic}/{self._state.tp[1]}/{self._offset}"

    def group_metadata(self) -> Any:
        """The consumer group metadata of the consumer that read this delivery (what a
        transaction commits its offset with, so a fenced zombie cannot commit it)."""
        source = self._source
        if source is None:
            raise RuntimeError("this delivery has no consumer to commit its offset with")
        return source.group_metadata()

    async def ack(self) -> None:
        if not self._settled:
            self._settled = True
            self._tracker.ack(self._state, self._offset)  # type: ignore[union-attr]

    @classmethod
    async def ack_many(cls, deliveries: Sequence[KafkaDelivery]) -> None:
        """``SupportsAckMany``: a batch's acks, grouped by partition, under one tracker lock;
        each delivery is acked at most once, as by ``ack``."""
        tracker = cls._tracker
        if tracker is None or set(map(type, deliveries)) != {cls}:
            # Not one subscription's class (the core groups by class, so not from it).
            groups: dict[type[KafkaDelivery], list[KafkaDelivery]] = {}
            for delivery in deliveries:
                groups.setdefault(type(delivery), []).append(delivery)
            for kind, group in groups.items():
                if kind._tracker is None:
                    raise TypeError(f"{kind.__name__} belongs to no subscription")
                await kind.ack_many(group)
            return
        by_state: dict[PartitionOffsets, list[int]] = {}
        last: PartitionOffsets | None = None
        offsets: list[int] = []
        for delivery in deliveries:
            if delivery._settled:
                continue
            delivery._settled = True
            state = delivery._state
            if state is not last:
                last = state
                offsets = by_state.setdefault(state, [])
            offsets.append(delivery._offset)
        if by_state:
            tracker.ack_many(by_state)

    @property
    def revoked(self) -> bool:
        """True once this delivery's partition was revoked or lost (it is the next owner's).

        The core reads it right before it starts or restarts the handler and, when it is
        True, drops the delivery without settling it (the SPI's promise). So the first True
        answer to an unsettled delivery also hands it back to the offset tracker: it stops
        counting as in flight, and the revocation waits only for handlers that really run,
        not for the deliveries queued behind them. Its offset is never acknowledged, so the
        commit point stops before it and the new owner reads it again.
        """
        state = self._state
        if not state.revoked:
            return False
        if not self._settled:
            self._settled = True
            self._tracker.drop(state)  # type: ignore[union-attr]
        return True


_new = object.__new__
_popleft = deque.popleft


def delivery_class(tracker: OffsetTracker, source: ConsumerThread | None) -> type[KafkaDelivery]:
    """The delivery class of one subscription (see :class:`KafkaDelivery`)."""
    return type(
        "KafkaDelivery",
        (KafkaDelivery,),
        {"__slots__": (), "_tracker": tracker, "_source": source, "__module__": __name__},
    )


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
        commits: bool = True,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._prefetch = max(1, prefetch)
        self._tracker = OffsetTracker()
        self._ready: deque[KafkaDelivery] = deque()
        # Workers waiting for a delivery. A waiter is woken with True by _wake (counted in
        # _woken until it runs) or with False by stop.
        self._waiters: deque[asyncio.Future[bool]] = deque()
        self._woken = 0  # waiters woken by _wake that have not run yet
        self._notified = False  # an _arrive is scheduled (set by the thread, cleared here)
        self._refilled = False  # receive refilled the queue itself in this loop iteration
        self._stopped = False
        self._closed = False
        self.topics = topics
        self._thread = ConsumerThread(
            config,
            topics,
            tracker=self._tracker,
            notify=self._notify,
            name=name,
            # Read ahead beyond the loop's queue: one more prefetch, at least READ_AHEAD (a
            # small prefetch made the thread poll, and wake the loop, every few messages),
            # at most a thousand. librdkafka's own fetch queue is far larger.
            buffer=min(max(self._prefetch, READ_AHEAD), 1000),
            revoke_timeout=revoke_timeout,
            manual_latest=manual_latest,
            gate=gate,
            commits=commits,
        )
        self._make = delivery_class(self._tracker, self._thread)

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self._thread.open)
        except BaseException:
            self._thread.close()
            raise
        self._thread.start()

    # -- consumer thread -> loop -----------------------------------------------------------

    def _notify(self) -> None:
        """The thread has read messages: have the loop take them (one call pending at most)."""
        if self._notified:
            return
        self._notified = True
        try:
            self._loop.call_soon_threadsafe(self._arrive)
        except RuntimeError:  # loop closed
            pass

    def _refill(self) -> int:
        """Move what the thread has read into the queue, up to ``prefetch`` queued."""
        ready = self._ready
        thread = self._thread
        room = self._prefetch - len(ready)
        while room > 0 and thread.has_ready():
            batch = thread.take(room, self._make)  # may drop messages no longer assigned
            if batch:
                ready.extend(batch)
                return len(batch)
        return 0

    def _refill_now(self) -> int:
        """``_refill`` from ``receive``: once per loop iteration, so that workers whose
        handlers never wait still yield to the loop at least every ``prefetch`` messages."""
        if self._refilled:
            return 0
        count = self._refill()
        if count:
            self._refilled = True
            self._loop.call_soon(self._rearm)
        return count

    def _arrive(self) -> None:
        self._notified = False  # before taking: what is read after this notifies again
        self._feed()

    def _rearm(self) -> None:
        self._refilled = False
        if self._waiters:
            self._feed()

    def _feed(self) -> None:
        if self._stopped:
            return
        self._refill()
        if self._ready and not self._woken:
            self._wake()

    def _wake(self) -> None:
        """Wake one waiting worker. Deliveries wake workers one at a time, as a chain: a worker
        that takes a delivery and leaves more behind wakes the next (``receive``) unless one
        is already on its way. Waking one per delivery made the first worker take them all
        (a handler that never waits does not yield) and the others wake for nothing: a
        future, a task step and a new future per message. A chain costs one spare wake per
        refill, and still gets every worker going when handlers wait."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)
                self._woken += 1
                return

    # -- the SPI ---------------------------------------------------------------------------

    async def receive(self) -> KafkaDelivery | None:
        ready = self._ready
        lock = self._tracker.lock
        while not self._stopped:
            if ready or self._refill_now():
                delivery = ready.popleft()
                if ready and not self._woken and self._waiters:
                    self._wake()  # the next worker, for what is left (see _wake)
                state = delivery._state
                with lock:  # take_many for one (inline: once per message)
                    if not state.revoked:
                        state.in_flight += 1
                        return delivery
                continue
            await self._wait()
        return None

    async def _wait(self) -> None:
        waiter: asyncio.Future[bool] = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            # Woken and cancelled before it ran: it was the chain's next link, so it hands the
            # wake on, or the deliveries it was woken for would wait for the next arrival.
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self._woken -= 1
                if self._ready and not self._woken:
                    self._wake()
            raise
        else:
            if waiter.result():  # woken by _wake: no longer on its way
                self._woken -= 1

    async def receive_many(self, max_n: int) -> list[KafkaDelivery]:
        """``SupportsReceiveMany``: up to ``max_n`` deliveries of what the consumer thread has
        read, taken under one lock; waits only while nothing is there."""
        ready = self._ready
        while not self._stopped:
            if ready or self._refill_now():
                if max_n >= len(ready):  # (the loop's own queue: nothing else touches it)
                    batch = list(ready)
                    ready.clear()
                else:
                    batch = list(map(_popleft, repeat(ready, max_n)))
                if ready and not self._woken and self._waiters:
                    self._wake()
                taken: list[KafkaDelivery] = self._tracker.take_many(batch)
                if taken:
                    return taken
                continue
            await self._wait()
        return []

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._thread.stop()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(False)

    async def close(self) -> None:
        await self.stop()
        if self._closed:
            return
        self._closed = True
        self._thread.close()
        # Bounded: librdkafka's consumer close can block without end (seen in CI right after
        # a broker restart, rd_kafka_consumer_close waiting on its queue), and an unbounded
        # wait then held the application's shutdown, and its default executor, forever. The
        # thread is a daemon; its offsets were committed before the close (ConsumerThread.
        # _shutdown), so giving up on the close loses nothing but the clean group leave.
        if not await asyncio.to_thread(self._thread.done.wait, CLOSE_TIMEOUT):
            logger.warning(
                "kafka consumer of %s did not close within %.0fs; leaving it behind "
                "(its group sees it leave after session.timeout.ms)",
                ", ".join(self.topics),
                CLOSE_TIMEOUT,
            )
