"""Settling a delivery: carry out one outcome, durably, exactly once.

The invariant this module owns (nothing else writes it): a delivery is settled once — by the
outcome of its handling, or earlier by the handler's own ``message.ack()/nack()/reject()`` —
and a copy (retry, re-hop, dead letter) is durable *before* the original is acked, so a crash in
between duplicates a message but never loses one.

A settlement never gives up on a delivery. When the copy cannot be published or the ack fails
(a broker outage, a failing idempotency store), it waits and tries again, with a capped backoff,
until it succeeds or the subscriber stops — and then the delivery stays unacked, so the broker
hands it out again. It never raises into the runtime and never forgets a delivery half-settled:
a forgotten delivery would hold a prefetch slot forever (RabbitMQ, RocketMQ) or pin a Kafka
partition's commit point. A copy that can *never* be published (it is refused as too large or
unsupported) escalates: a retry copy becomes a dead letter; a dead letter that cannot be written
is left unacked and parked, logged as an error, until the subscriber stops.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Sequence

import uuid_utils

from .. import envelope
from ..errors import ConfigurationError, DeliveryControl, EncodeError, MessageTooLargeError
from ..message import Message
from ..transport import Delivery
from .host import Host
from .outcome import (
    ACK,
    Ack,
    DeadLetter,
    Drop,
    Forward,
    Manual,
    Outcome,
    Retry,
    backoff,
    decide,
    nacked,
)

logger = logging.getLogger("unimq.pipeline")

#: Pause between two tries of a settlement that failed: first, and at most.
FIRST_PAUSE = 0.2
MAX_PAUSE = 5.0
#: How long an unsettleable delivery stays parked: until the subscriber stops, in practice.
PARK_FOREVER = 1e9

_OPEN, _SETTLING, _SETTLED = 0, 1, 2
_NO_ARGUMENTS: dict[str, object] = {}


class Settlement:
    """The pipeline's side of one delivery (and the :class:`~unimq.message.Settler` of its
    message): carries out an :class:`~unimq.delivery.outcome.Outcome` exactly once."""

    __slots__ = (
        "_state",
        "body",
        "completed",
        "delivery",
        "envelope",
        "host",
        "in_place",
        "kwargs",
        "message",
        "reply",
    )

    def __init__(self, host: Host, delivery: Delivery, env: envelope.Envelope) -> None:
        self.host = host
        self.delivery = delivery
        self.envelope = env
        self.message: Message | None = None
        # The handler's arguments, set by the decode stage (never mutated: shared until then).
        self.kwargs: dict[str, object] = _NO_ARGUMENTS
        self.body: object = None  # a batch subscriber's decoded body (no kwargs dict each)
        self._state = _OPEN
        self.completed = False  # the idempotency mark was written
        # A nack() on a subscriber that retries in place: acted on after the handler returns
        # (the handler is still on the stack when it calls nack).
        self.in_place: Retry | None = None
        # A request's reply (encoded body, content type), set by the invoke stage on success.
        self.reply: tuple[bytes, str] | None = None

    def open_message(self, group: str) -> Message:
        """The :class:`Message` a handler sees for this delivery (settled through ``self``)."""
        message = self.message = envelope.message(self.delivery, self.envelope, group, self)
        return message

    def close(self) -> None:
        """Drop the pipeline's references to the handler's :class:`Message` and arguments,
        once the pipeline is done with this delivery.

        The message refers back to this settlement (it settles through it, also later: a
        manual ``ack()`` after the handler returned still lands here), so while this object
        holds the message, the delivery's objects form a reference cycle that only the cyclic
        garbage collector frees: five objects per message, the collector's young generation
        filled every ~140 messages and the freed memory cold by the time it is reused. Broken
        here, reference counting frees them as soon as the handler lets go of the message.
        """
        self.message = None
        self.kwargs = _NO_ARGUMENTS

    @property
    def settled(self) -> bool:
        """Settled, or being settled: a later outcome or call changes nothing."""
        return self._state != _OPEN

    # -- the handler's side (Message.ack/nack/reject) --------------------------------------

    async def ack(self, message: object = None) -> None:
        await self.carry_out(Ack())

    async def nack(self, message: object, delay: float | None) -> None:
        if self._state != _OPEN:
            return
        outcome = nacked(delay, self.envelope.attempt, self.host.subscriber.retry)
        if isinstance(outcome, Retry) and self.host.retry_in_place:
            self.in_place = outcome  # the in-place retry stage takes it from here
            return
        await self.carry_out(outcome)

    async def reject(self, message: object, reason: str) -> None:
        await self.carry_out(DeadLetter("rejected", None, reason))

    # -- carrying out ----------------------------------------------------------------------

    async def carry_out(self, outcome: Outcome) -> None:
        """Settle with ``outcome`` unless already settled; never raises (but cancellation)."""
        if self._state != _OPEN:
            return
        if outcome is ACK and self.host.plain_ack and self.reply is None:
            # The path of nearly every message: nothing to copy, nothing to mark.
            self._state = _SETTLING
            try:
                await self.delivery.ack()
                self._state = _SETTLED
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("acking message %s failed; trying again", self.envelope.id)
        elif isinstance(outcome, (Manual, Drop)):
            return
        self._state = _SETTLING
        pause = FIRST_PAUSE
        copied = False  # the copy is durable: a later try only acks
        while True:
            try:
                if not copied:
                    outcome = await self._copy(outcome)
                    copied = True
                await self._finish(outcome)
                self._state = _SETTLED
                return
            except asyncio.CancelledError:
                raise
            except (MessageTooLargeError, EncodeError, ConfigurationError) as exc:
                if isinstance(outcome, (Retry, Forward)):
                    logger.error(
                        "the retry copy of message %s cannot be published (%s); dead-lettering it",
                        self.envelope.id,
                        exc,
                    )
                    outcome = DeadLetter("non-retryable", exc, str(exc))
                    continue
                logger.error(
                    "message %s cannot be settled (%s: %s); it stays unacked until the "
                    "subscriber stops",
                    self.envelope.id,
                    type(exc).__name__,
                    exc,
                )
                await self.host.pause(PARK_FOREVER, self.delivery)
                return
            except Exception as exc:
                if self.host.stopping:
                    logger.warning(
                        "message %s not settled at shutdown (%s); the broker will redeliver it",
                        self.envelope.id,
                        exc,
                    )
                    return
                logger.warning(
                    "settling message %s failed (%s: %s); trying again in %.3gs",
                    self.envelope.id,
                    type(exc).__name__,
                    exc,
                    pause,
                )
                if not await self.host.pause(pause, self.delivery):
                    return  # stopping: left unacked, the broker redelivers it
                pause = min(pause * 2, MAX_PAUSE)

    async def _copy(self, outcome: Outcome) -> Outcome:
        """Publish whatever copy ``outcome`` needs, durably; returns the outcome to finish."""
        if isinstance(outcome, Retry):
            await self._publish_retry(outcome)
        elif isinstance(outcome, DeadLetter):
            await self._publish_dead_letter(outcome)
        elif self.reply is not None and isinstance(outcome, Ack):
            await self._publish_reply(self.reply)
        elif isinstance(outcome, Forward):
            await self.host.publisher.send(
                self.host.retry_topic,
                self.delivery.body,
                envelope.retry_copy(self.envelope, attempt=self.envelope.attempt, due=outcome.due),
                key=self.delivery.key,
                message_id=self.envelope.id,
                content_type=self.envelope.content_type,
                due=outcome.due,
                kind="delay",
            )
        return outcome

    async def _publish_reply(self, reply: tuple[bytes, str]) -> None:
        """The handler's return value to the requester, durably, before the request is acked.

        A reply the backend refuses for good (too large) is logged and dropped: the request is
        handled, and the requester gets ``RequestTimeoutError``."""
        env = self.envelope
        body, content_type = reply
        reply_id = str(uuid_utils.uuid7())
        wire = envelope.reply(
            message_id=reply_id, content_type=content_type, correlation_id=env.correlation_id or ""
        )
        try:
            await self.host.publisher.send_now(
                env.reply_to or "", body, wire, None, reply_id, content_type, "reply"
            )
        except (MessageTooLargeError, EncodeError, ConfigurationError) as exc:
            logger.error("the reply to message %s cannot be published (%s); dropped", env.id, exc)

    async def _publish_retry(self, outcome: Retry) -> None:
        host = self.host
        env = self.envelope
        delay = outcome.delay
        if delay is None:
            delay = backoff(host.subscriber.retry, env.attempt)
        due = host.now() + delay if delay > 0 else None
        await host.publisher.send(
            host.retry_topic,
            self.delivery.body,
            envelope.retry_copy(env, attempt=env.attempt + 1, due=due),
            key=self.delivery.key,
            message_id=env.id,
            content_type=env.content_type,
            due=due,
            kind="retry",
        )
        if host.listeners:
            host.listeners.retried(env.topic, host.subscriber.group, env.id, env.attempt, delay)
        error = outcome.error
        logger.warning(
            "retrying message %s of %r in %.3gs (attempt %d of %d failed%s)",
            env.id,
            env.topic,
            delay,
            env.attempt,
            host.subscriber.retry.max_attempts,
            f": {type(error).__name__}: {error}" if error is not None else "",
            exc_info=handler_traceback(error),
        )

    async def _publish_dead_letter(self, outcome: DeadLetter) -> None:
        host = self.host
        env = self.envelope
        subscriber = host.subscriber
        target = subscriber.dead_letter_topic
        # An exception's text may hold lone surrogates: fine for neither a header nor a log.
        detail = envelope.encodable(
            outcome.detail or (str(outcome.error) if outcome.error is not None else "")
        )
        if target is None:
            logger.error(
                "dropping message %s of %r after %d attempt(s) (%s%s): the subscriber has "
                "dead_letter=False",
                env.id,
                env.topic,
                env.attempt,
                outcome.reason,
                f": {detail}" if detail else "",
                exc_info=handler_traceback(outcome.error),
            )
        else:
            await host.publisher.send(
                target,
                self.delivery.body,
                envelope.dead_letter_copy(
                    env,
                    reason=outcome.reason,
                    error_type=error_type(outcome.error) if outcome.error is not None else "",
                    detail=detail,
                    group=subscriber.group,
                    failed_at=host.now(),
                ),
                key=self.delivery.key,
                message_id=env.id,
                content_type=env.content_type,
                kind="dead-letter",
            )
            logger.error(
                "message %s of %r dead-lettered to %r after %d attempt(s): %s%s",
                env.id,
                env.topic,
                target,
                env.attempt,
                outcome.reason,
                f" ({detail})" if detail else "",
                exc_info=handler_traceback(outcome.error),
            )
        if host.listeners:
            host.listeners.dead_lettered(env.topic, subscriber.group, env.id, outcome.reason)

    async def _finish(self, outcome: Outcome) -> None:
        """The ack that ends every outcome (after the idempotency mark, for a success)."""
        if isinstance(outcome, Ack) and self.host.subscriber.idempotent and not self.completed:
            try:
                await self.host.store.complete(self.host.group, self.envelope.id)
                self.completed = True
            except Exception:
                # The handler succeeded: ack anyway. Without the mark a redelivered duplicate
                # runs again, which at-least-once allows; stranding the delivery would not.
                logger.exception(
                    "could not mark message %s as handled in the idempotency store",
                    self.envelope.id,
                )
        await self.delivery.ack()

    def after_failure(self, error: BaseException) -> Outcome:
        """The outcome of a handler that raised ``error`` (see :func:`decide`)."""
        if self._state != _OPEN and self.in_place is None:
            log_after_settle(self.host.subscriber.handler.name, self.envelope.id, error)
            return Manual()
        return decide(error, self.envelope.attempt, self.host.subscriber.retry)


def handler_traceback(error: BaseException | None) -> BaseException | None:
    """What to log a traceback of: a handler's own exception (or a body that did not decode),
    not a deliberate ``RetryLater``/``Reject`` (a decision, not a failure)."""
    return None if error is None or isinstance(error, DeliveryControl) else error


def error_type(error: BaseException) -> str:
    """``unimq-error-type``: the qualified name (builtins without a module)."""
    kind = type(error)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def log_after_settle(handler: str, message_id: str, error: BaseException) -> None:
    detail = "".join(traceback.format_exception_only(type(error), error)).strip()
    logger.error("handler %s raised after settling message %s: %s", handler, message_id, detail)


async def ack_deliveries(deliveries: Sequence[Delivery]) -> list[Delivery]:
    """Ack ``deliveries`` with one ``ack_many`` call per delivery class that has it
    (:class:`~unimq.transport.SupportsAckMany`); returns those it did not ack (of a class
    without ``ack_many``, or whose call failed) for the caller to settle one by one with
    :meth:`Settlement.carry_out`, which retries. A delivery's ``ack`` is at most once, so a
    second try after a partly done ``ack_many`` is harmless."""
    if not deliveries:
        return []
    first = type(deliveries[0])
    groups: dict[type, Sequence[Delivery]]
    if all(type(d) is first for d in deliveries):  # one class: nearly always
        groups = {first: deliveries}
    else:
        groups = {}
        for delivery in deliveries:
            groups.setdefault(type(delivery), []).append(delivery)  # type: ignore[attr-defined]
    left: list[Delivery] = []
    for cls, group in groups.items():
        method = getattr(cls, "ack_many", None)
        if method is None:
            left.extend(group)
            continue
        try:
            await method(group)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("acking %d messages at once failed (%s); one by one", len(group), exc)
            left.extend(group)
    return left


async def ack_together(
    host: Host, batch: list[Settlement], outcomes: list[Outcome]
) -> set[Settlement]:
    """A batch's plain acks through :func:`ack_deliveries`; returns the settlements it settled.
    What it does not settle (no ``ack_many``, a request's reply, an idempotent subscriber,
    already settled, or ``ack_many`` failed) is left open for :meth:`Settlement.carry_out`."""
    done: set[Settlement] = set()
    if not host.plain_ack:
        return done
    group = [
        settlement
        for settlement, outcome in zip(batch, outcomes, strict=True)
        if outcome is ACK and settlement._state == _OPEN and settlement.reply is None
    ]
    if not group:
        return done
    for settlement in group:
        settlement._state = _SETTLING
    left = {id(delivery) for delivery in await ack_deliveries([s.delivery for s in group])}
    for settlement in group:
        if id(settlement.delivery) in left:
            settlement._state = _OPEN
        else:
            settlement._state = _SETTLED
            done.add(settlement)
    return done
