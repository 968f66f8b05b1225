"""Batch subscribers: collect deliveries into batches, call the handler once per batch, and
settle every message on its own.

Each delivery first passes the per-message stages that do not need the handler — revocation,
hold/forward of early deliveries, decode (a poison body is dead-lettered alone), idempotency (a
known id is acked, never handed to the handler) — then waits in the batch being collected
(:class:`~unimq.delivery.batch_settle.Batch`). The batch goes to the handler when it is full or
``max_wait`` after its first message. Success acks the whole batch in one step, with no object
per message; an exception fails each message as if its own handler had raised it;
``BatchFailed`` only those. Each failed message is settled by its own
:class:`~unimq.delivery.settle.Settlement`, concurrently, so the copies of one batch go out
together (one write per loop turn on RabbitMQ).

Ordered batch subscribers run one batch at a time and retry failed messages in place (the rest
of the batch is settled first, which keeps per-key order only when a failed message's key has
nothing behind it in the same batch: so an ordered batch retries *every* message from the first
failed one of each key on). Unordered ones run up to ``concurrency`` batches at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from ..batch import BatchFailed, BatchHandler
from ..codec import DecodeError, Decoder
from ..envelope import PLAIN, Envelope, last_stamp, parse_attempt, published_stamp, read
from ..envelope import message as message_of
from ..headers import DELIVER_AT
from ..message import Message
from ..slots import Slots
from ..transport import Delivery, Subscription, SupportsPark, SupportsReceiveMany
from .batch_settle import Batch, settle_failures
from .outcome import ACK, MANUAL, DeadLetter, Forward, Outcome, Retry, backoff, decide
from .settle import Settlement, ack_together
from .stages import HOLD_IN_PLACE

if TYPE_CHECKING:
    from .runtime import SubscriberRuntime

logger = logging.getLogger("unimq.pipeline")


class _TimedOut:
    """No delivery arrived in time for the batch being collected."""


TIMED_OUT = _TimedOut()


class Batches:
    """The batch side of one subscriber runtime."""

    def __init__(self, runtime: SubscriberRuntime) -> None:
        subscriber = runtime.subscriber
        policy = subscriber.batch
        assert policy is not None and isinstance(subscriber.handler, BatchHandler)
        self.runtime = runtime
        self.handler: BatchHandler = subscriber.handler
        self.max_size = policy.max_size
        self.max_wait = policy.max_wait
        self.ordered = subscriber.ordered
        self.collectors = 1 if self.ordered else subscriber.concurrency
        self.room = Slots(self.max_size * self.collectors)
        # Received, not yet in a batch (None: a collector's stop signal). A deque and an event
        # rather than an asyncio.Queue, so an ordered collector's pause can park what waits.
        self.waiting: deque[Delivery | None] = deque()
        self._arrived = asyncio.Event()
        self._collecting = asyncio.Lock()  # one collector builds a batch at a time
        self._parked = False  # an ordered collector waits on the clock: so does what arrives
        self.success = MANUAL if subscriber.ack == "manual" else ACK
        self._holds: set[asyncio.Task[None]] = set()
        self.group = subscriber.group
        self.idempotent = subscriber.idempotent
        # Build only the lists the handler takes (a Message per delivery only for a handler of
        # messages; decode only for a handler of bodies). A message that fails without one is
        # settled from its envelope; nothing downstream of the handler reads the Message.
        self.takes_messages = self.handler.takes_messages
        self.takes_bodies = self.handler.takes_bodies
        # A batch that succeeded as a whole is acked in one step (Batch.ack_all).
        self.ack_at_once = self.success is ACK and runtime.plain_ack

    @property
    def prefetch(self) -> int:
        return self.max_size * self.collectors

    # -- receiving ---------------------------------------------------------------------------

    async def receive(self, subscription: Subscription) -> None:
        """One per subscription: hand deliveries to the collectors, ``room`` at most waiting."""
        runtime = self.runtime
        if isinstance(subscription, SupportsReceiveMany):
            await self._receive_many(subscription)
            return
        while not runtime.stopping:
            await self.room.take()
            delivery = await runtime.receive_or_retry(subscription)
            if delivery is None:
                self.room.give()
                return
            if self._parked and isinstance(delivery, SupportsPark):
                delivery.park()
            self._put(delivery)

    async def _receive_many(self, subscription: SupportsReceiveMany) -> None:
        """``receive`` for a subscription that hands over many deliveries per call: one room
        slot is awaited, the others taken as they are free (a batch already received may
        overshoot ``room`` by less than ``max_size``; it is repaid as they settle). No slot is
        held while waiting, so the main and retry receivers never starve each other."""
        runtime = self.runtime
        room = self.room
        waiting = self.waiting
        max_size = self.max_size
        while not runtime.stopping:
            await room.take()
            try:
                deliveries = await subscription.receive_many(min(max_size, 1 + room.free))
            except asyncio.CancelledError:
                room.give()
                raise
            except Exception:
                room.give()
                logger.exception(
                    "receiving for %r failed; retrying in 1s", runtime.subscriber.topic
                )
                await asyncio.sleep(1)
                continue
            if not deliveries:
                room.give()
                return
            room.take_many_anyway(len(deliveries) - 1)
            if self._parked:
                for delivery in deliveries:
                    if isinstance(delivery, SupportsPark):
                        delivery.park()
            waiting.extend(deliveries)
            del deliveries  # (not kept while waiting for room: they may be long settled)
            self._arrived.set()
            if len(waiting) >= max_size:
                # A batch's worth waits: let the collectors take it before reading further
                # ahead. A subscription that never has to wait (memory://, a full read-ahead
                # buffer) would otherwise be read up to ``room`` (max_size x concurrency) ahead
                # in one go: thousands of deliveries kept alive, promoted by the garbage
                # collector to its oldest generation, each a cost of the full collections
                # they bring on (issue 14; tests/test_batch_admission.py).
                await asyncio.sleep(0)

    def _put(self, item: Delivery | None) -> None:
        self.waiting.append(item)
        self._arrived.set()

    async def _get(self, timeout: float | None) -> Delivery | _TimedOut | None:
        """The next waiting item; ``False`` when ``timeout`` passed first."""
        while not self.waiting:
            self._arrived.clear()
            if timeout is None:
                await self._arrived.wait()
                continue
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except asyncio.TimeoutError:
                return TIMED_OUT
        return self.waiting.popleft()

    def stop(self) -> None:
        for _ in range(self.collectors):
            self._put(None)

    async def _pause(self, seconds: float, batch: list[Delivery]) -> bool:
        """Wait on the clock with the batch parked, and, when ordered, what waits behind it."""
        behind: list[Delivery] = []
        if self.ordered:
            self._parked = True
            behind = [d for d in self.waiting if d is not None]
        deliveries = batch + behind
        try:
            return await self.runtime.pause(seconds, deliveries[0], *deliveries[1:])
        finally:
            if self.ordered:
                self._parked = False
                for late in self.waiting:  # arrived during the pause, parked on arrival
                    if late is not None and late not in behind and isinstance(late, SupportsPark):
                        late.unpark()

    # -- collecting --------------------------------------------------------------------------

    async def collect(self) -> None:
        """One per allowed concurrent batch: build a batch, run it, repeat.

        One collector builds a batch at a time (``_collecting``); the batches then run
        concurrently. Collectors filling batches side by side would split the arrivals
        between them: smaller batches, later full, and interleaved deliveries, which keep a
        backend from settling a finished batch in one step (RabbitMQ's multiple acks)."""
        loop = asyncio.get_running_loop()
        waiting = self.waiting
        max_size = self.max_size
        plain = not self.idempotent
        group = self.group
        revocable = self.runtime.revocable
        decode = self.handler.body_decoder
        while True:
            async with self._collecting:
                first = await self._get(None)
                if first is None or isinstance(first, _TimedOut):
                    return
                batch = Batch(self.runtime, self.takes_messages, self.takes_bodies)
                deliveries = batch.deliveries
                stop = False
                item: Delivery | _TimedOut | None = first
                deadline = loop.time() + self.max_wait
                while True:
                    if item is None:
                        stop = True
                        break
                    if isinstance(item, _TimedOut):
                        break
                    pending = self._admit(item, batch)
                    if pending is not None:  # a delivery with more to do than decoding
                        await pending
                    if plain and waiting:
                        admit_ready(waiting, batch, max_size, group, revocable, decode)
                    if len(deliveries) >= max_size:
                        break
                    if waiting:  # what is already here joins without a wait
                        item = waiting.popleft()
                    else:
                        item = await self._get(max(0.0, deadline - loop.time()))
            if deliveries:
                await self._run(batch)
            # Not kept while waiting for the next batch (up to ``concurrency`` collectors wait).
            del batch, deliveries, first, item
            if stop:
                return

    def _admit(self, delivery: Delivery, batch: Batch) -> Awaitable[None] | None:
        """The per-message stages. The common case (no delay, not idempotent, decodes) is
        appended here without awaiting, and without a Settlement; anything else returns the
        work to await."""
        runtime = self.runtime
        if runtime.revocable and delivery.revoked:  # type: ignore[attr-defined]
            self.room.give()
            return None
        env = read(delivery)
        if env.due is not None:
            early = env.due - runtime.now()
            if early > HOLD_IN_PLACE:
                return self._alone(Settlement(runtime, delivery, env), Forward(env.due))
            if early > 0:
                task = asyncio.create_task(self._requeue_when_due(delivery, early))
                self._holds.add(task)
                task.add_done_callback(self._holds.discard)
                return None
        body: object = None
        if self.takes_bodies:
            try:
                body = self.handler.decode(delivery.body)
            except DecodeError as error:
                return self._alone(
                    Settlement(runtime, delivery, env),
                    DeadLetter("decode-error", error, str(error)),
                )
        message = self._message(delivery, env, batch) if self.takes_messages else None
        if self.idempotent:
            return self._admit_once(delivery, env.id, message, body, batch)
        batch.add(delivery, message, body)
        return None

    def _message(self, delivery: Delivery, env: Envelope, batch: Batch) -> Message:
        """The Message of a delivery of ``batch`` (which settles it)."""
        return message_of(delivery, env, self.group, batch)

    async def _admit_once(
        self,
        delivery: Delivery,
        message_id: str,
        message: Message | None,
        body: object,
        batch: Batch,
    ) -> None:
        """``idempotent=True``: a known id is acked, never handed to the handler."""
        runtime = self.runtime
        try:
            first = await runtime.store.begin(runtime.group, message_id, runtime.idempotency_lease)
        except Exception as exc:
            logger.warning("idempotency store failed for message %s (%s)", message_id, exc)
            first = True  # run it: at-least-once allows a duplicate, not a loss
        if not first:
            settlement = Settlement(runtime, delivery, read(delivery))
            settlement.completed = True
            await self._alone(settlement, ACK)
            return
        batch.add(delivery, message, body)

    async def _requeue_when_due(self, delivery: Delivery, early: float) -> None:
        self.room.give()  # it re-enters through the queue, and takes room again there
        if await self.runtime.pause(early, delivery):
            await self.room.take()
            self._put(delivery)

    async def _alone(self, settlement: Settlement, outcome: Outcome) -> None:
        try:
            await settlement.carry_out(outcome)
        finally:
            self.room.give()

    # -- running -----------------------------------------------------------------------------

    async def _run(self, batch: Batch) -> None:
        runtime = self.runtime
        size = len(batch)
        runtime.in_flight += size
        try:
            if runtime.throttle is not None and not await runtime.throttle.admit(
                size, lambda seconds: self._pause(seconds, batch.deliveries)
            ):
                return  # stopping: unacked, the broker redelivers them
            current: Batch | None = batch
            while current is not None:  # more than one round: retried in place
                current = await self._round(current)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception(
                "unexpected error in the batch pipeline of %r", runtime.subscriber.topic
            )
        finally:
            # Only now: a round retried in place carries its Settlements on. A later round
            # (Batch.again) holds none but the first round's, so closing those closes all.
            batch.close_settlements()
            if self.success is ACK:  # (ack="manual": its messages may be settled later still)
                batch.close()
            runtime.in_flight -= size
            self.room.give_many(size)

    async def _round(self, batch: Batch) -> Batch | None:
        """One handler call and the settlement of its ending; the batch to retry in place
        next, if any."""
        runtime = self.runtime
        failed = await self._invoke(batch)
        if runtime.retry_in_place and batch.settlements:
            failed = self._nacked_in_place(batch, failed)
        try:
            if failed is None:  # every message succeeded
                if self.ack_at_once:
                    await batch.ack_all()  # the common case: one step, no object per message
                    return None
                if self.success is MANUAL and runtime.plain_ack:
                    return None  # each message is settled by its handler
            elif runtime.plain_ack and not runtime.retry_in_place:
                if self.success is ACK:
                    await batch.ack_all(failed)
                await settle_failures(batch, failed)
                return None
            # The general way: a Settlement per message (idempotent, or retried in place).
            settlements = batch.every_settlement()
            outcomes: list[Outcome] = [self.success] * len(settlements)
            for index, outcome in (failed or {}).items():
                outcomes[index] = outcome
            if not runtime.retry_in_place:
                await self._settle(settlements, outcomes)
                return None
            again = await self._settle_in_place(settlements, outcomes)
            if not again:
                return None
            return Batch.again(runtime, again, self.takes_messages, self.takes_bodies)
        finally:
            if self.success is ACK:
                batch.close()

    @staticmethod
    def _nacked_in_place(
        batch: Batch, failed: dict[int, Outcome] | None
    ) -> dict[int, Outcome] | None:
        """Add the messages the handler nacked itself to ``failed``. With retry in place a
        ``message.nack()`` only records its Retry (``Settlement.in_place``) for the pipeline
        to carry out; a batch that succeeded as a whole would otherwise ack them."""
        for index, settlement in batch.settlements.items():
            if settlement.in_place is not None and (failed is None or index not in failed):
                failed = {} if failed is None else failed
                failed[index] = settlement.in_place
                settlement.in_place = None
        return failed

    async def _invoke(self, batch: Batch) -> dict[int, Outcome] | None:
        """One handler call; the outcome of each failed message by index, or None when all
        succeeded. Only a failed message gets a Settlement (its attempt decides its fate)."""
        runtime = self.runtime
        policy = runtime.subscriber.retry
        kwargs = self.handler.batch_arguments(batch.messages, batch.bodies)
        try:
            await self.handler.invoke(kwargs, runtime.executor)
        except asyncio.CancelledError:
            raise
        except BatchFailed as failed:
            outcomes: dict[int, Outcome] = {}
            size = len(batch)
            for index, error in failed.failures.items():
                if 0 <= index < size:
                    outcomes[index] = decide(
                        error, batch.settlement(index).envelope.attempt, policy
                    )
                else:
                    logger.error("BatchFailed names index %d of a batch of %d", index, size)
            return outcomes or None
        except Exception as error:
            return {
                index: batch.settlement(index).after_failure(error) for index in range(len(batch))
            }
        return None

    async def _settle(self, batch: list[Settlement], outcomes: list[Outcome]) -> None:
        """Acks one after another (an ack only queues work on every backend here); copies
        concurrently, so a batch's retry and dead-letter copies go out together."""
        copies = []
        acks = await ack_together(self.runtime, batch, outcomes)  # one ack_many where it can
        for settlement, outcome in zip(batch, outcomes, strict=True):
            if outcome is ACK:
                if settlement not in acks:
                    await settlement.carry_out(outcome)
            else:
                copies.append(settlement.carry_out(outcome))
        if copies:
            await asyncio.gather(*copies)
        await self._release_leases(batch, outcomes)

    async def _settle_in_place(
        self, batch: list[Settlement], outcomes: list[Outcome]
    ) -> list[Settlement]:
        """Ordered (or no native delay): settle what ended; return what retries, after its
        backoff. From a key's first retried message on, its later ones retry too (order)."""
        retrying_keys: set[str | None] = set()
        done: list[tuple[Settlement, Outcome]] = []
        again: list[Settlement] = []
        pause = 0.0
        policy = self.runtime.subscriber.retry
        for settlement, outcome in zip(batch, outcomes, strict=True):
            key = settlement.delivery.key
            if isinstance(outcome, Retry) or (key is not None and key in retrying_keys):
                if isinstance(outcome, Retry):
                    delay = outcome.delay
                    attempt = settlement.envelope.attempt
                    pause = max(pause, backoff(policy, attempt) if delay is None else delay)
                    if key is not None:
                        retrying_keys.add(key)
                    if settlement.message is not None:  # (a handler of bodies has none)
                        settlement.message.attempt += 1
                    settlement.envelope = settlement.envelope._replace(attempt=attempt + 1)
                again.append(settlement)
            else:
                done.append((settlement, outcome))
        if done:
            await self._settle([s for s, _ in done], [o for _, o in done])
        if again and not await self._pause(pause, [s.delivery for s in again]):
            return []
        return again

    async def _release_leases(self, batch: list[Settlement], outcomes: list[Outcome]) -> None:
        if not self.runtime.subscriber.idempotent:
            return
        runtime = self.runtime
        for settlement, outcome in zip(batch, outcomes, strict=True):
            if outcome is not ACK and not settlement.completed:
                try:
                    await runtime.store.release(runtime.group, settlement.envelope.id)
                except Exception:
                    logger.exception("could not release the lease of %s", settlement.envelope.id)


def admit_ready(
    waiting: deque[Delivery | None],
    batch: Batch,
    max_size: int,
    group: str,
    revocable: bool,
    decode: Decoder | None,
) -> None:
    """``Batches._admit`` in one loop for what already ``waiting``, as far as each is the common
    case (not revoked, no delay, decodes; the subscriber not idempotent): a batch of 500 is
    mostly admitted here. It stops at the first item that is not (or when ``batch`` has
    ``max_size``), which the caller admits the general way. ``decode`` makes the body of each
    for a batch that takes bodies (``None``: the body as it is, for ``list[bytes]``).

    This is the per-message cost of a batch subscriber (issue 14), so it reads no more than the
    handler needs: for a handler of bodies alone, only whether a delivery is delayed; for a
    handler of messages, a *plain* delivery (``envelope.PLAIN``: what a publish without headers
    carries, nearly every delivery) becomes its ``Message`` straight from its four headers,
    without an ``Envelope``, and without ``Message.__init__`` (a class call with eleven
    arguments costs about half again as much as setting the slots). Any other delivery takes
    ``envelope.read`` and ``envelope.message``. tests/test_batch_admission.py holds both ways
    equal, attribute by attribute.
    """
    deliveries = batch.deliveries
    take = min(max_size - len(deliveries), len(waiting))
    add = deliveries.append
    messages = batch.messages
    bodies = batch.bodies
    add_body = bodies.append if bodies is not None else None
    popleft = waiting.popleft
    # Each delivery is taken first and handed back (appendleft) where the general way must
    # take over: one deque operation per admitted delivery instead of a peek and a pop.
    if messages is None:
        # A handler of bodies: nothing to read but the delay (``read`` gives due None without
        # ``unimq-deliver-at``; with it, the general way decides).
        for _ in range(take):
            delivery = popleft()
            if (
                delivery is None
                or (revocable and delivery.revoked)  # type: ignore[attr-defined]
                or _DELIVER_AT in delivery.headers
            ):
                waiting.appendleft(delivery)
                return
            if add_body is not None:
                if decode is None:
                    add_body(delivery.body)
                else:
                    try:
                        add_body(decode(delivery.body))
                    except DecodeError:
                        waiting.appendleft(delivery)  # (_admit decodes it again: dead letter)
                        return
            add(delivery)
        return
    add_message = messages.append
    new = _new_message
    id_name, attempt_name, type_name, published_name = PLAIN
    last_text, last_published = last_stamp()
    for _ in range(take):
        delivery = popleft()
        if delivery is None or (revocable and delivery.revoked):  # type: ignore[attr-defined]
            waiting.appendleft(delivery)
            return
        raw = delivery.headers
        message_id = None
        if len(raw) == 4:
            try:  # (subscripts: a third cheaper than .get here)
                message_id = raw[id_name]
                attempt_text = raw[attempt_name]
                content_type = raw[type_name]
                published_text = raw[published_name]
            except KeyError:
                message_id = None
        if message_id and attempt_text and content_type and published_text:
            # Plain: envelope.read's fast path and envelope.message, inline.
            if published_text != last_text:
                last_text = published_text
                last_published = published_stamp(published_text)
            message = new(Message)
            message.id = message_id
            message.topic = delivery.topic
            message.key = delivery.key
            message.body = delivery.body
            message.headers = {}
            message.attempt = 1 if attempt_text == "1" else parse_attempt(attempt_text)
            message.group = group
            message.content_type = content_type
            message._settler = batch
            message.published_at = last_published
            message.due = None
            message.outcome = None
        else:
            env = read(delivery)
            if env.due is not None:
                waiting.appendleft(delivery)
                return
            message = message_of(delivery, env, group, batch)
        if add_body is not None:
            if decode is None:
                add_body(delivery.body)
            else:
                try:
                    add_body(decode(delivery.body))
                except DecodeError:
                    waiting.appendleft(delivery)  # (_admit decodes it again: dead letter)
                    return
        add_message(message)
        add(delivery)


_new_message = object.__new__
_DELIVER_AT = DELIVER_AT
