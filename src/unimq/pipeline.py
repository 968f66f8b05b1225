"""The delivery pipeline: the one place where unimq's semantics are implemented.

For each delivery a transport hands out: hold it if it arrived before its time (re-hop),
decode the body, consult the idempotency store, call the handler (through middleware), and
settle: ack on success, a retry copy on the group's retry topic (non-blocking retry) or an
in-place retry (ordered subscribers), or a dead-letter copy. A copy is always durably
published *before* the original is acked, so a crash between the two duplicates a message but
never loses one.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from datetime import datetime, timezone
from typing import Any

from . import headers as h
from . import parking
from .clock import Clock
from .codec import DecodeError
from .errors import Reject, RetryLater
from .idempotency import IdempotencyStore
from .instrumentation import Listeners
from .message import Message
from .naming import retry_topic
from .publishing import Publisher
from .router import Subscriber
from .slots import Slots
from .transport import (
    Delivery,
    Subscription,
    SubscriptionSpec,
    SupportsDeclareTopic,
    Transport,
)

logger = logging.getLogger("unimq.pipeline")

#: A delivery up to this many seconds early is held in place; earlier ones are re-hopped.
HOLD_IN_PLACE = 2.0
MAX_ERROR_HEADER = 1000

Next = Callable[[], Awaitable[Any]]
Middleware = Callable[[Message, Next], Awaitable[Any]]


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


# Outcomes of one handler run.
_SUCCESS = 0
_RETRY = 1
_DEAD = 2
_MANUAL = 3  # ack="manual" and the handler returned: it settles (or not) by itself


class _Settlement:
    """The pipeline's side of one delivery: settles it exactly once."""

    __slots__ = ("completed", "delivery", "message", "ordered_retry", "runtime", "settled")

    def __init__(self, runtime: SubscriberRuntime, delivery: Delivery) -> None:
        self.runtime = runtime
        self.delivery = delivery
        self.settled = False
        self.completed = False  # the idempotency mark was written
        self.message: Message | None = None
        # An ordered subscriber's nack() retries in place: remembered here, acted on after the
        # handler returns (the handler is still on the stack when it calls nack).
        self.ordered_retry: float | None = None

    async def ack(self) -> None:
        if self.settled:
            return
        self.settled = True
        runtime = self.runtime
        message = self.message
        if runtime.subscriber.idempotent and message is not None:
            await runtime.context.store.complete(runtime.group, message.id)
            self.completed = True
        await self.delivery.ack()

    async def nack(self, delay: float | None) -> None:
        if self.settled:
            return
        if self.runtime._retry_in_place:
            self.ordered_retry = delay if delay is not None else -1.0
            self.settled = True
            return
        await self.retry(delay, None)

    async def reject(self, reason: str) -> None:
        await self.dead_letter("rejected", None, reason_text=reason)

    async def retry(self, delay: float | None, error: BaseException | None) -> None:
        """Non-blocking retry: a copy with attempt+1 on the group's retry topic, then ack."""
        if self.settled:
            return
        message = self.message
        assert message is not None
        policy = self.runtime.subscriber.retry
        if message.attempt >= policy.max_attempts:
            await self.dead_letter("max-attempts", error)
            return
        self.settled = True
        if delay is None:
            delay = policy.delay_for(message.attempt)
        runtime = self.runtime
        copy = dict(self.delivery.headers)
        copy[h.ATTEMPT] = str(message.attempt + 1)
        copy[h.TOPIC] = message.topic
        copy[h.ID] = message.id
        copy.pop(h.DELIVER_AT, None)
        try:
            await runtime.context.publisher.send_reliably(
                runtime.retry_topic,
                message.body,
                copy,
                key=message.key,
                message_id=message.id,
                content_type=message.content_type,
                due=runtime.context.clock.now() + delay if delay > 0 else None,
            )
        except Exception:
            logger.exception("retry copy of %s not published; leaving it unacked", message.id)
            return
        if runtime.context.listeners:
            runtime.context.listeners.retried(
                message.topic, runtime.subscriber.group, message.id, message.attempt, delay
            )
        logger.info(
            "retrying message %s of %r in %.3gs (attempt %d of %d failed%s)",
            message.id,
            message.topic,
            delay,
            message.attempt,
            policy.max_attempts,
            f": {type(error).__name__}: {error}" if error is not None else "",
        )
        await self.delivery.ack()

    async def dead_letter(
        self, reason: str, error: BaseException | None, *, reason_text: str = ""
    ) -> None:
        """Dead-letter copy with diagnostic headers, durably, then ack the original."""
        if self.settled:
            return
        self.settled = True
        runtime = self.runtime
        subscriber = runtime.subscriber
        delivery = self.delivery
        message = self.message
        topic = (
            message.topic if message is not None else delivery.headers.get(h.TOPIC, delivery.topic)
        )
        message_id = (
            message.id
            if message is not None
            else (delivery.headers.get(h.ID) or delivery.native_id)
        )
        attempt = message.attempt if message is not None else _attempt_of(delivery.headers)
        target = subscriber.dead_letter_topic
        detail = reason_text or (str(error) if error is not None else "")
        if target is None:
            logger.error(
                "dropping message %s of %r after %d attempt(s) (%s%s): the subscriber has "
                "dead_letter=False",
                message_id,
                topic,
                attempt,
                reason,
                f": {detail}" if detail else "",
            )
            if runtime.context.listeners:
                runtime.context.listeners.dead_lettered(topic, subscriber.group, message_id, reason)
            await delivery.ack()
            return
        copy = {k: v for k, v in delivery.headers.items() if k not in h.BOOKKEEPING}
        content_type = delivery.headers.get(h.CONTENT_TYPE)
        copy[h.ID] = message_id
        copy[h.ATTEMPT] = "1"
        if content_type is not None:
            copy[h.CONTENT_TYPE] = content_type
        copy[h.DLQ_REASON] = reason
        copy[h.ERROR_TYPE] = _error_type(error) if error is not None else ""
        copy[h.ERROR_MESSAGE] = detail[:MAX_ERROR_HEADER]
        copy[h.ORIGINAL_TOPIC] = topic
        copy[h.ORIGINAL_GROUP] = subscriber.group
        copy[h.ATTEMPTS] = str(attempt)
        copy[h.FAILED_AT] = (
            datetime.fromtimestamp(runtime.context.clock.now(), tz=timezone.utc)
            .isoformat()
            .replace("+00:00", "Z")
        )
        try:
            await runtime.context.publisher.send_reliably(
                target,
                delivery.body,
                copy,
                key=delivery.key,
                message_id=message_id,
                content_type=content_type,
                kind="dead-letter",
            )
        except Exception:
            logger.exception("dead-letter copy of %s not published; leaving it unacked", message_id)
            return
        if runtime.context.listeners:
            runtime.context.listeners.dead_lettered(topic, subscriber.group, message_id, reason)
        logger.warning(
            "message %s of %r dead-lettered to %r after %d attempt(s): %s%s",
            message_id,
            topic,
            target,
            attempt,
            reason,
            f" ({detail})" if detail else "",
        )
        await delivery.ack()


def _error_type(error: BaseException) -> str:
    kind = type(error)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def _attempt_of(headers: Any) -> int:
    try:
        return max(1, int(headers.get(h.ATTEMPT, 1)))
    except (TypeError, ValueError):
        return 1


class SubscriberRuntime:
    """Runs one subscriber: ``concurrency`` workers pulling from its topic and its retry topic."""

    def __init__(self, context: PipelineContext, subscriber: Subscriber, group: str) -> None:
        self.context = context
        self.subscriber = subscriber
        self.group = group
        self.retry_topic = retry_topic(subscriber.topic, group)
        self._subscriptions: list[Subscription] = []
        self._workers: list[asyncio.Task[None]] = []
        # Shared by the workers of the topic and of the retry topic: never more than
        # ``concurrency`` handlers in flight for the subscriber.
        self._slots = Slots(subscriber.concurrency)
        self._lanes: dict[str, deque[Delivery]] = {}
        # Deliveries waiting in lanes behind a busy key: about ``concurrency`` of them (plus at
        # most one per worker that is waiting for room).
        self._lane_room = Slots(subscriber.concurrency)
        self._holds: set[asyncio.Task[None]] = set()
        self._sleeping_holds: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self.in_flight = 0
        self._parked_keys: set[str] = set()  # ordered keys whose head waits in place
        self._held = 0  # deliveries held because they arrived a little early
        self._invoke = self._build_invoke()
        # Without native delay a retry copy cannot wait on the broker: retry in place instead.
        self._retry_in_place = subscriber.ordered or context.transport.capabilities.max_delay == 0
        self._simple = (
            subscriber.ack == "auto" and not subscriber.idempotent and not self._retry_in_place
        )

    def parked_count(self) -> int:
        """Unsettled deliveries waiting on the clock, not on a handler (see ``parking``)."""
        lanes = self._lanes
        return self._held + sum(1 + len(lanes.get(key, ())) for key in self._parked_keys)

    async def start(self) -> None:
        parking.register(self.context.clock, self)
        subscriber = self.subscriber
        transport = self.context.transport
        dead_letter_topic = subscriber.dead_letter_topic
        if dead_letter_topic is not None and isinstance(transport, SupportsDeclareTopic):
            await transport.declare_topic(dead_letter_topic)
        for topic, role in ((subscriber.topic, "main"), (self.retry_topic, "retry")):
            spec = SubscriptionSpec(
                topic=topic,
                group=self.group,
                prefetch=subscriber.concurrency,
                broadcast=subscriber.broadcast,
                ordered=subscriber.ordered,
                role=role,  # type: ignore[arg-type]
            )
            subscription = await transport.subscribe(spec)
            self._subscriptions.append(subscription)
            for index in range(subscriber.concurrency):
                name = f"unimq:{subscriber.topic}:{self.group}:{index}"
                self._workers.append(asyncio.create_task(self._work(subscription), name=name))

    def _hold(self, delivery: Delivery, early: float) -> None:
        """Hold a delivery that arrived up to ``HOLD_IN_PLACE`` s early until it is due."""
        task = asyncio.create_task(self._release_when_due(delivery, early))
        self._holds.add(task)
        task.add_done_callback(self._holds.discard)

    async def _release_when_due(self, delivery: Delivery, early: float) -> None:
        self._held += 1
        task = asyncio.current_task()
        assert task is not None
        self._sleeping_holds.add(task)
        try:
            await self.context.clock.sleep(early)
        except asyncio.CancelledError:
            return  # stopping: it stays unacked and the broker redelivers it
        finally:
            self._held -= 1
            self._sleeping_holds.discard(task)
        if self._stopping:
            return  # stays unacked: the broker redelivers it
        slots = self._slots
        await slots.take()
        try:
            await self.handle(delivery)
        finally:
            slots.give()

    async def stop(self, timeout: float) -> None:
        """Stop taking messages, let in-flight handlers finish (up to ``timeout``), release."""
        self._stopping = True
        for subscription in self._subscriptions:
            await subscription.stop()
        for task in self._sleeping_holds:
            task.cancel()  # not yet due: nothing runs, the broker keeps the message
        waiting = [*self._workers, *self._holds]
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
        self._workers.clear()
        parking.unregister(self.context.clock, self)

    async def _work(self, subscription: Subscription) -> None:
        ordered = self.subscriber.ordered
        slots = self._slots
        while not self._stopping:
            try:
                delivery = await subscription.receive()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("receiving for %r failed; retrying in 1s", self.subscriber.topic)
                await asyncio.sleep(1)
                continue
            if delivery is None:
                return
            if ordered and delivery.key is not None:
                await self._run_lane(delivery)
                continue
            due_text = delivery.headers.get(h.DELIVER_AT)
            if due_text is not None:
                early = _seconds_early(due_text, self.context.clock.now())
                if 0 < early <= HOLD_IN_PLACE:
                    self._hold(delivery, early)  # without a slot or this worker: others go on
                    continue
            if not slots.take_now():
                await slots.take()
            try:
                await self.handle(delivery)
            finally:
                slots.give()

    async def _run_lane(self, delivery: Delivery) -> None:
        """Per-key lanes: a key's deliveries run one at a time, in the order they arrived."""
        key = delivery.key
        assert key is not None
        lane = self._lanes.get(key)
        if lane is not None:
            # The worker running this key will get to it. Append first (no await between
            # receive and here, so a key's deliveries enter its lane in arrival order), then
            # take a room token before this worker receives again: while the lanes are full,
            # workers stop receiving, so a hot key cannot pile up deliveries (back-pressure).
            lane.append(delivery)
            await self._lane_room.take()
            return
        lane = self._lanes[key] = deque()
        slots = self._slots
        try:
            await slots.take()
            try:
                await self.handle(delivery)
            finally:
                slots.give()
            while lane and not self._stopping:
                queued = lane.popleft()
                self._lane_room.give()
                await slots.take()
                try:
                    await self.handle(queued)
                finally:
                    slots.give()
        finally:
            del self._lanes[key]
            for _ in lane:  # left unacked: they go back to the broker on close
                self._lane_room.give()

    def _build_invoke(self) -> Callable[[Message, dict[str, Any]], Awaitable[Any]]:
        handler = self.subscriber.handler
        context = self.context

        middlewares = context.middlewares  # the broker's list: later additions apply too

        def invoke(message: Message, kwargs: dict[str, Any]) -> Awaitable[Any]:
            if not middlewares:
                return handler.invoke(kwargs, context.executor)
            call: Next = lambda: handler.invoke(kwargs, context.executor)  # noqa: E731
            for middleware in reversed(middlewares):
                call = _bind(middleware, message, call)
            return call()

        return invoke

    async def handle(self, delivery: Delivery) -> None:
        """Run the whole pipeline for one delivery; never raises (except cancellation)."""
        self.in_flight += 1
        try:
            await self._handle(delivery)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception(
                "unexpected error in the delivery pipeline of %r", self.subscriber.topic
            )
        finally:
            self.in_flight -= 1

    async def _handle(self, delivery: Delivery) -> None:
        # One flat function on purpose: this runs once per message, and on the memory backend
        # nothing in it waits, so every extra coroutine layer is measurable overhead.
        context = self.context
        subscriber = self.subscriber
        raw = delivery.headers
        settlement = _Settlement(self, delivery)

        due_text = raw.get(h.DELIVER_AT)
        if due_text is not None:
            early = _seconds_early(due_text, context.clock.now())
            if early > HOLD_IN_PLACE:
                await self._rehop(delivery, settlement)
                return
            if early > 0:
                self._held += 1
                try:
                    await context.clock.sleep(early)
                finally:
                    self._held -= 1

        attempt_text = raw.get(h.ATTEMPT)
        attempt = 1 if attempt_text is None or attempt_text == "1" else _attempt_of(raw)
        message = Message(
            id=raw.get(h.ID) or delivery.native_id,
            topic=raw.get(h.TOPIC) or delivery.topic,
            key=delivery.key,
            body=delivery.body,
            headers={k: v for k, v in raw.items() if k not in h.BOOKKEEPING},
            attempt=attempt,
            group=subscriber.group,
            content_type=raw.get(h.CONTENT_TYPE),
            settler=settlement,
        )
        settlement.message = message
        try:
            kwargs = subscriber.handler.arguments(message)
        except DecodeError as error:
            await settlement.dead_letter("decode-error", error)
            return

        if self._simple:  # auto ack, not idempotent, retries via the retry topic
            try:
                await self._invoke(message, kwargs)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if settlement.settled:
                    _log_after_settle(subscriber.handler.name, message.id, exc)
                    return
                await self._failed(settlement, message, exc)
                return
            if not settlement.settled:
                settlement.settled = True
                await delivery.ack()
            return

        holds_lease = False
        if subscriber.idempotent:
            if not await context.store.begin(self.group, message.id, context.lease):
                logger.debug("message %s already handled by %r; acking", message.id, self.group)
                settlement.settled = True
                await delivery.ack()
                return
            holds_lease = True
        try:
            await self._run(message, kwargs, settlement)
        finally:
            if holds_lease and not settlement.completed:
                await context.store.release(self.group, message.id)

    async def _run(self, message: Message, kwargs: dict[str, Any], settlement: _Settlement) -> None:
        subscriber = self.subscriber
        policy = subscriber.retry
        while True:
            error: BaseException | None = None
            delay: float | None = None
            try:
                await self._invoke(message, kwargs)
                outcome = _MANUAL if subscriber.ack == "manual" else _SUCCESS
            except RetryLater as exc:
                error, delay, outcome = exc, exc.delay, _RETRY
            except Reject as exc:
                await settlement.dead_letter("rejected", exc, reason_text=exc.reason)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = exc
                outcome = _RETRY if isinstance(exc, policy.retry_on) else _DEAD
                if settlement.settled and settlement.ordered_retry is None:
                    _log_after_settle(subscriber.handler.name, message.id, exc)
                    return
            if settlement.ordered_retry is not None:  # ordered + manual nack()
                delay = None if settlement.ordered_retry < 0 else settlement.ordered_retry
                settlement.ordered_retry = None
                settlement.settled = False
                outcome = _RETRY
            if outcome == _SUCCESS:
                await settlement.ack()
                return
            if outcome == _MANUAL:
                return
            if outcome == _DEAD:
                await settlement.dead_letter("non-retryable", error)
                return
            # _RETRY
            if message.attempt >= policy.max_attempts:
                await settlement.dead_letter("max-attempts", error)
                return
            if not self._retry_in_place:
                await settlement.retry(delay, error)
                return
            # Ordered (or no native delay): retry in place, so later messages of the key wait
            # for this one.
            pause = policy.delay_for(message.attempt) if delay is None else delay
            logger.info(
                "retrying ordered message %s of %r in place in %.3gs (attempt %d of %d failed)",
                message.id,
                message.topic,
                pause,
                message.attempt,
                policy.max_attempts,
            )
            if self.context.listeners:
                self.context.listeners.retried(
                    message.topic, self.subscriber.group, message.id, message.attempt, pause
                )
            key = message.key
            if key is not None:
                self._parked_keys.add(key)
            else:
                self._held += 1
            try:
                await self.context.clock.sleep(pause)
            finally:
                if key is not None:
                    self._parked_keys.discard(key)
                else:
                    self._held -= 1
            message.attempt += 1

    async def _failed(self, settlement: _Settlement, message: Message, exc: Exception) -> None:
        """The handler raised, on a subscriber that retries through its retry topic."""
        if isinstance(exc, Reject):
            await settlement.dead_letter("rejected", exc, reason_text=exc.reason)
        elif isinstance(exc, RetryLater):
            await settlement.retry(exc.delay, exc)  # dead-letters after the last attempt
        elif isinstance(exc, self.subscriber.retry.retry_on):
            await settlement.retry(None, exc)
        else:
            await settlement.dead_letter("non-retryable", exc)

    async def _rehop(self, delivery: Delivery, settlement: _Settlement) -> None:
        """Arrived before its time (a delay longer than the broker's native maximum): send it
        on to this group's retry topic for the next hop, then ack."""
        raw = dict(delivery.headers)
        due = int(raw[h.DELIVER_AT]) / 1000
        raw.setdefault(h.TOPIC, delivery.topic)
        message_id = raw.setdefault(h.ID, delivery.native_id)
        try:
            await self.context.publisher.send_reliably(
                self.retry_topic,
                delivery.body,
                raw,
                key=delivery.key,
                message_id=message_id,
                content_type=raw.get(h.CONTENT_TYPE),
                due=due,
                kind="delay",
            )
        except Exception:
            logger.exception("re-hop of delayed message %s failed; leaving it unacked", message_id)
            return
        settlement.settled = True
        await delivery.ack()


def _log_after_settle(handler: str, message_id: str, error: BaseException) -> None:
    detail = "".join(traceback.format_exception_only(error)).strip()
    logger.error("handler %s raised after settling message %s: %s", handler, message_id, detail)


def _seconds_early(due_text: str, now: float) -> float:
    try:
        return int(due_text) / 1000 - now
    except ValueError:
        return 0.0


def _bind(middleware: Middleware, message: Message, call_next: Next) -> Next:
    return lambda: middleware(message, call_next)
