"""Running one subscriber: workers, slots, per-key lanes and shutdown — nothing else.

What happens to one delivery is the stack's business (:mod:`unimq.delivery.stages`); this
module decides *when* each delivery runs:

- **Unordered subscribers**: ``concurrency`` workers per subscription (its topic and its retry
  topic) each pull a delivery, take a slot and run it; the slots are shared, so never more than
  ``concurrency`` handlers run for the subscriber. Pulling gives back-pressure for free and
  costs no task per message.
- **Ordered subscribers**: one dispatcher per subscription receives, so deliveries are assigned
  to their key's lane in arrival order, by construction. A lane runs its deliveries one at a
  time; lanes of different keys run concurrently, each taking a slot only to run. A hot key
  never blocks other keys while slots are free: the dispatcher waits only when ``LANE_ROOM``
  received deliveries are waiting to run (and the broker holds the rest).
- **Revoked deliveries** (``Capabilities.revocable``) are dropped unsettled before they start:
  the broker has given them to another consumer, and running them would race it.
- **Shutdown** stops receiving, cancels what only waits on the clock (holds, in-place retry
  backoffs, settlement retries: those deliveries stay unacked and go back to the broker), lets
  running handlers finish within the graceful timeout, then closes the subscriptions.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable
from concurrent.futures import Executor
from typing import Any, TypeVar

from .. import envelope
from ..clock import Clock
from ..headers import DELIVER_AT
from ..idempotency import IdempotencyStore
from ..instrumentation import Listeners
from ..naming import retry_topic
from ..publishing import Publisher
from ..router import Subscriber
from ..slots import Slots
from ..transport import (
    Delivery,
    Subscription,
    SubscriptionSpec,
    SupportsDeclareTopic,
    SupportsPark,
    Transport,
)
from . import stages
from .batching import Batches
from .host import Middleware
from .throttle import Throttle

logger = logging.getLogger("unimq.pipeline")
T = TypeVar("T")

#: Received deliveries of an ordered subscriber that may wait in lanes (besides the running ones).
LANE_ROOM = 64


class PipelineContext:
    """What every subscriber runtime of one broker shares."""

    def __init__(
        self,
        *,
        transport: Transport,
        publisher: Publisher,
        clock: Clock,
        executor: Executor | None,
        idempotency_store: IdempotencyStore,
        idempotency_lease: float,
        middlewares: list[Middleware],
        listeners: Listeners | None = None,
    ) -> None:
        self.transport = transport
        self.publisher = publisher
        self.clock = clock
        self.executor = executor
        self.store = idempotency_store
        self.lease = idempotency_lease
        self.middlewares = middlewares
        self.listeners = listeners if listeners is not None else Listeners()


class _Lane:
    """One key's deliveries waiting behind the one that runs."""

    __slots__ = ("parked", "queue")

    def __init__(self) -> None:
        self.queue: deque[Delivery] = deque()
        self.parked = False  # the running head waits on the clock: so do the queued ones


class SubscriberRuntime:
    """Runs one subscriber on its topic and its group's retry topic."""

    def __init__(self, context: PipelineContext, subscriber: Subscriber, group: str) -> None:
        self.context = context
        self.subscriber = subscriber
        self.group = group
        self.retry_topic = retry_topic(subscriber.topic, group)
        # What the stages and the settlement read (see settle.Host).
        self.publisher = context.publisher
        self.store = context.store
        self.listeners = context.listeners
        self.executor = context.executor
        self.middlewares = context.middlewares
        self.idempotency_lease = context.lease
        capabilities = context.transport.capabilities
        self.revocable = capabilities.revocable
        # Without native delay a retry copy cannot wait on the broker: retry in place instead.
        # A transactional subscriber too: a retry copy would be written outside the transaction.
        self.retry_in_place = (
            subscriber.ordered or capabilities.max_delay == 0 or subscriber.transactional
        )
        self.transport = context.transport
        self.consume_transaction = (
            context.transport.begin_consume_transaction  # type: ignore[attr-defined]
            if subscriber.transactional
            else None
        )
        self.max_transaction_messages = capabilities.max_transaction_messages
        self.plain_ack = not subscriber.idempotent
        self.running_ids: dict[str, int] = {}
        self._clock = context.clock
        self.now = context.clock.now
        self._subscriptions: list[Subscription] = []
        self._tasks: list[asyncio.Task[None]] = []  # workers and dispatchers
        self._lane_tasks: set[asyncio.Task[None]] = set()
        self._pauses: set[asyncio.Future[None]] = set()
        # Shared by everything of this subscriber: never more than ``concurrency`` handlers.
        self._slots = Slots(subscriber.concurrency)
        self._lanes: dict[str, _Lane] = {}
        self._lane_room = Slots(subscriber.concurrency + LANE_ROOM)
        self._stopping = False
        self.in_flight = 0
        limit = subscriber.rate_limit
        self.throttle = (
            Throttle(limit, context.clock, context.listeners, subscriber.topic, subscriber.group)
            if limit is not None
            else None
        )
        self._gated = self.revocable or self.throttle is not None  # checks before a handler starts
        self._batches = Batches(self) if subscriber.batch is not None else None
        self._handle = stages.build(self) if self._batches is None else None

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def start(self) -> None:
        subscriber = self.subscriber
        transport = self.context.transport
        if self.throttle is not None:
            await self.throttle.start()  # a shared limit's store must answer before we consume
        dead_letter_topic = subscriber.dead_letter_topic
        if dead_letter_topic is not None and isinstance(transport, SupportsDeclareTopic):
            await transport.declare_topic(dead_letter_topic)
        ordered = subscriber.ordered
        batches = self._batches
        if batches is not None:
            prefetch = batches.prefetch
        else:
            prefetch = subscriber.concurrency + (LANE_ROOM if ordered else 0)
        roles = (("main", subscriber.topic), ("retry", self.retry_topic))
        for role, topic in roles:
            spec = SubscriptionSpec(
                topic=topic,
                group=self.group,
                prefetch=prefetch,
                broadcast=subscriber.broadcast,
                ordered=ordered,
                role=role,  # type: ignore[arg-type]
                transactional=subscriber.transactional,
            )
            subscription = await transport.subscribe(spec)
            self._subscriptions.append(subscription)
            name = f"unimq:{subscriber.topic}:{self.group}:{role}"
            if batches is not None:
                task = asyncio.create_task(batches.receive(subscription), name=name)
                self._tasks.append(task)
                continue
            if ordered:
                task = asyncio.create_task(self._dispatch(subscription), name=name)
                self._tasks.append(task)
                continue
            for index in range(subscriber.concurrency):
                task = asyncio.create_task(self._work(subscription), name=f"{name}:{index}")
                self._tasks.append(task)
        if batches is not None:
            for index in range(batches.collectors):
                name = f"unimq:{subscriber.topic}:{self.group}:batch:{index}"
                self._lane_tasks.add(asyncio.create_task(batches.collect(), name=name))

    # -- waiting on the clock --------------------------------------------------------------

    async def pause(self, seconds: float, delivery: Delivery, *others: Delivery) -> bool:
        """Wait ``seconds`` on the clock with ``delivery`` (and ``others`` waiting behind it)
        parked; ``False`` when the subscriber stops meanwhile (they then stay unacked and go
        back to the broker)."""
        if self._stopping:
            return False
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        self._pauses.add(sleeper)
        parked = [d for d in (delivery, *others) if isinstance(d, SupportsPark)]
        for waiting in parked:
            waiting.park()
        lane = self._lanes.get(delivery.key) if delivery.key is not None else None
        if lane is not None:
            _set_parked(lane, True)
        try:
            await sleeper
        except asyncio.CancelledError:
            if not (sleeper.cancelled() and self._stopping):
                sleeper.cancel()
                raise
            return False
        finally:
            self._pauses.discard(sleeper)
            for waiting in parked:
                waiting.unpark()
            if lane is not None:
                _set_parked(lane, False)
        return not self._stopping

    # -- running deliveries ----------------------------------------------------------------

    async def handle(self, delivery: Delivery) -> None:
        """Run the stack for one delivery; never raises (except cancellation)."""
        if self._gated:
            if self.revocable and delivery.revoked:  # type: ignore[attr-defined]
                logger.debug(
                    "message %s was revoked before it ran; dropping it", delivery.native_id
                )
                return
            if self.throttle is not None and not await self.throttle.admit(
                1, lambda seconds: self.pause(seconds, delivery)
            ):
                return  # stopping: unacked, the broker redelivers it
        self.in_flight += 1
        try:
            await self._handle(delivery)  # type: ignore[misc]
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception(
                "unexpected error in the delivery pipeline of %r", self.subscriber.topic
            )
        finally:
            self.in_flight -= 1

    async def receive_or_retry(self, subscription: Subscription) -> Delivery | None:
        """Receive; when receiving fails, log and retry each second (``None`` once stopped)."""
        return await self._receive(subscription, failed=False)

    async def _receive(self, subscription: Subscription, failed: bool = True) -> Delivery | None:
        """Receive; when receiving fails (or ``failed``: it just did), log and retry each second."""
        while True:
            if failed:
                if self._stopping:
                    return None
                logger.exception("receiving for %r failed; retrying in 1s", self.subscriber.topic)
                await asyncio.sleep(1)
            try:
                return await subscription.receive()
            except asyncio.CancelledError:
                raise
            except Exception:
                failed = True

    async def _work(self, subscription: Subscription) -> None:
        """An unordered worker: receive, take a slot, run, repeat."""
        slots = self._slots
        while not self._stopping:
            try:
                delivery = await subscription.receive()
            except asyncio.CancelledError:
                raise
            except Exception:
                delivery = await self._receive(subscription)  # logs, waits, receives again
            if delivery is None:
                return
            if DELIVER_AT in delivery.headers and self._held_early(delivery):
                continue
            if not slots.take_now():
                await self._wait_for_slot(delivery, None)
            try:
                await self.handle(delivery)
            finally:
                slots.give()

    def _held_early(self, delivery: Delivery) -> bool:
        """A delivery up to ``HOLD_IN_PLACE`` s early waits without a slot or this worker, so
        the messages behind it go on (an ordered one waits in its lane instead)."""
        due = envelope.parse_due(delivery.headers.get(DELIVER_AT))
        early = 0.0 if due is None else due - self.now()
        if not 0 < early <= stages.HOLD_IN_PLACE:
            return False
        task = asyncio.create_task(self._release_when_due(delivery, early))
        self._lane_tasks.add(task)
        task.add_done_callback(self._lane_tasks.discard)
        return True

    async def _release_when_due(self, delivery: Delivery, early: float) -> None:
        if not await self.pause(early, delivery):
            return  # stopping: it stays unacked and the broker redelivers it
        if not self._slots.take_now():
            await self._wait_for_slot(delivery, None)
        try:
            await self.handle(delivery)
        finally:
            self._slots.give()

    async def _dispatch(self, subscription: Subscription) -> None:
        """An ordered subscription's only receiver: puts each delivery in its key's lane."""
        room = self._lane_room
        while not self._stopping:
            await room.take()
            delivery = await self._receive(subscription, failed=False)
            if delivery is None:
                room.give()
                return
            key = delivery.key
            lane = self._lanes.get(key) if key is not None else None
            if lane is not None:
                lane.queue.append(delivery)  # arrival order is lane order
                if lane.parked and isinstance(delivery, SupportsPark):
                    delivery.park()
                continue
            if key is not None:
                lane = self._lanes[key] = _Lane()
            task = asyncio.create_task(self._run_lane(key, delivery, lane))
            self._lane_tasks.add(task)
            task.add_done_callback(self._lane_tasks.discard)

    async def _run_lane(self, key: str | None, delivery: Delivery, lane: _Lane | None) -> None:
        """Run a key's deliveries one at a time, in the order they arrived."""
        slots = self._slots
        room = self._lane_room
        try:
            while True:
                if not slots.take_now():
                    await self._wait_for_slot(delivery, lane)
                try:
                    await self.handle(delivery)
                finally:
                    slots.give()
                    room.give()
                if lane is None or not lane.queue or self._stopping:
                    return
                delivery = lane.queue.popleft()
                if lane.parked and isinstance(delivery, SupportsPark):
                    delivery.unpark()
        finally:
            if lane is not None:
                del self._lanes[key]  # type: ignore[arg-type]
                for _ in lane.queue:  # left unacked: they go back to the broker on close
                    room.give()
                _set_parked(lane, False)

    async def parked(self, awaitable: Awaitable[T], delivery: Delivery) -> T:
        """Await ``awaitable`` with ``delivery`` parked: for waits that end only when another
        delivery, itself waiting on the clock, goes on."""
        park = isinstance(delivery, SupportsPark)
        if park:
            delivery.park()  # type: ignore[attr-defined]
        try:
            return await awaitable
        finally:
            if park:
                delivery.unpark()  # type: ignore[attr-defined]

    async def _wait_for_slot(self, delivery: Delivery, lane: _Lane | None) -> None:
        """Wait for a slot with the delivery (and its lane) parked: when every slot is held by a
        delivery that waits on the clock, this one waits on the clock too, and a VirtualClock's
        ``advance`` must not wait for it (it would wait forever)."""
        park = isinstance(delivery, SupportsPark)
        if park:
            delivery.park()  # type: ignore[attr-defined]
        if lane is not None:
            _set_parked(lane, True)
        try:
            await self._slots.take()
        finally:
            if park:
                delivery.unpark()  # type: ignore[attr-defined]
            if lane is not None:
                _set_parked(lane, False)

    async def stop(self, timeout: float) -> None:
        """Stop taking messages, let running handlers finish (up to ``timeout``), release."""
        self._stopping = True
        for subscription in self._subscriptions:
            await subscription.stop()
        for sleeper in list(self._pauses):
            sleeper.cancel()  # waiting on the clock: nothing runs, the broker keeps the message
        if self._batches is not None:
            await asyncio.wait(self._tasks, timeout=timeout)  # the receivers end first
            self._batches.stop()  # then each collector, after the batch it runs
        waiting: list[asyncio.Task[Any]] = [*self._tasks, *self._lane_tasks]
        if waiting:
            _, pending = await asyncio.wait(waiting, timeout=timeout)
            if pending:
                logger.warning(
                    "%d handler(s) of %r still running after the %.3gs graceful timeout; "
                    "cancelling them (their messages will be redelivered)",
                    self.in_flight,
                    self.subscriber.topic,
                    timeout,
                )
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=5)
        for subscription in self._subscriptions:
            await subscription.close()
        self._subscriptions.clear()
        self._tasks.clear()
        if self.throttle is not None:
            await self.throttle.close()


def _set_parked(lane: _Lane, parked: bool) -> None:
    """Park (or unpark) the deliveries queued in ``lane`` with its head."""
    if lane.parked == parked:
        return
    lane.parked = parked
    for queued in lane.queue:
        if isinstance(queued, SupportsPark):
            if parked:
                queued.park()
            else:
                queued.unpark()
