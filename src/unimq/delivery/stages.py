"""The delivery stack: single-idea stages, composed once per subscriber.

Like Starlette's ``build_middleware_stack``, :func:`build` looks at what a subscriber needs and
composes only those stages, once, when the subscriber starts:

- **hold / forward** — a delivery up to ``HOLD_IN_PLACE`` s early waits in place; an earlier one
  (a delay longer than the broker's native maximum) is forwarded to the retry topic;
- **decode** — the body to the handler's annotation; a poison body is dead-lettered at once;
- **idempotency** (``idempotent=True``) — a message id already handled is acked, not run again;
- **invoke** — user middleware and the handler; whatever it raises is turned into an outcome by
  :func:`~unimq.delivery.outcome.decide`;
- **in-place retry** (``ordered=True``, or a backend without native delay) — a failed attempt
  waits its backoff and runs again, so later messages of the key wait for it;
- **settle** — :class:`~unimq.delivery.settle.Settlement` carries the outcome out.

A plain subscriber (auto ack, not idempotent, retries through its retry topic) gets decode ->
invoke -> settle: the fast path is what the composition yields for it, not a second copy.
Stages return an :class:`~unimq.delivery.outcome.Outcome`; only the settle step acts on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .. import envelope, logs
from ..codec import DecodeError, encode
from ..logs import CURRENT
from ..message import Message
from ..transport import Delivery
from .host import Host, Middleware, Next
from .outcome import ACK, DROP, MANUAL, DeadLetter, Forward, Outcome, Retry, backoff, decide
from .settle import Settlement, handler_traceback
from .transactional import transaction_stage

logger = logging.getLogger("unimq.pipeline")

#: A delivery up to this many seconds early is held in place; earlier ones are forwarded.
HOLD_IN_PLACE = 2.0

Stage = Callable[[Settlement], Awaitable[Outcome]]
Handle = Callable[[Delivery], Awaitable[None]]


def build(runtime: Host) -> Handle:
    """The whole pipeline of one subscriber, as one callable per delivery."""
    subscriber = runtime.subscriber
    stage: Stage | None = None  # None: the handler alone, called inline (below)
    if runtime.middlewares or runtime.retry_in_place or subscriber.idempotent:
        stage = invoke_stage(runtime)
        if subscriber.transactional:
            stage = transaction_stage(runtime, stage)
        if runtime.retry_in_place:
            stage = in_place_retry_stage(runtime, stage)
        if subscriber.idempotent:
            stage = idempotency_stage(runtime, stage)
    handler = subscriber.handler
    arguments = handler.arguments
    executor = runtime.executor
    success = MANUAL if subscriber.ack == "manual" else ACK
    group = subscriber.group
    now = runtime.now
    # idempotent=True: ids of the deliveries running here, so a duplicate of one of them waits
    # for it parked (see idempotency_stage)
    running_ids = runtime.running_ids if subscriber.idempotent else None
    current = CURRENT if logs.enabled() else None  # the delivery context costs: only if asked

    async def handle(delivery: Delivery) -> None:
        env = envelope.read(delivery)
        settlement = Settlement(runtime, delivery, env)
        if env.due is not None:
            early = env.due - now()
            if early > HOLD_IN_PLACE:
                await settlement.carry_out(Forward(env.due))
                return
            if early > 0 and not await runtime.pause(early, delivery):
                return  # stopping: it stays unacked and the broker redelivers it
        message = settlement.open_message(group)
        # log lines of this delivery carry it (unimq.logs)
        token = current.set(message) if current is not None else None
        try:
            try:
                kwargs = settlement.kwargs = arguments(message)
            except DecodeError as error:
                await settlement.carry_out(DeadLetter("decode-error", error, str(error)))
                return
            if stage is not None:
                if running_ids is None:
                    await settlement.carry_out(await stage(settlement))
                    return
                message_id = env.id
                running_ids[message_id] = running_ids.get(message_id, 0) + 1
                try:
                    await settlement.carry_out(await stage(settlement))
                finally:
                    left = running_ids[message_id] - 1
                    if left:
                        running_ids[message_id] = left
                    else:
                        del running_ids[message_id]
                return
            # The invoke stage with nothing around it, inlined: one coroutine less per message
            # on the path of nearly every subscriber (the same decision as invoke_stage's).
            try:
                result = await handler.invoke(kwargs, executor)
                if env.reply_to is not None:  # a request: the result is the reply
                    settlement.reply = encode(result)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                await settlement.carry_out(settlement.after_failure(error))
                return
            await settlement.carry_out(success)
        finally:
            settlement.close()
            if token is not None:
                current.reset(token)  # type: ignore[union-attr]

    return handle


def invoke_stage(host: Host) -> Stage:
    """User middleware around the handler; the handler's ending as an outcome.

    Middleware sees the handler's return value or exception as always, and also
    ``message.outcome``: what unimq decided that ending means, set by the innermost call before
    control returns to the middleware (so a metrics middleware can count retries and dead
    letters without a listener). What propagates out of the middleware decides in the end: a
    middleware that swallows an exception turns the ending into a success.
    """
    handler = host.subscriber.handler
    executor = host.executor
    middlewares = host.middlewares  # the broker's list: later additions apply too
    policy = host.subscriber.retry
    success = MANUAL if host.subscriber.ack == "manual" else ACK

    async def invoke(settlement: Settlement) -> Outcome:
        kwargs = settlement.kwargs
        try:
            if middlewares:
                message = settlement.message
                assert message is not None

                async def innermost() -> Any:
                    try:
                        result = await handler.invoke(kwargs, executor)
                    except Exception as error:
                        message.outcome = decide(error, message.attempt, policy)
                        raise
                    message.outcome = success
                    return result

                call: Next = innermost
                for middleware in reversed(middlewares):
                    call = _bind(middleware, message, call)
                result = await call()
            else:
                result = await handler.invoke(kwargs, executor)
            if settlement.envelope.reply_to is not None:  # a request: the result is the reply
                settlement.reply = encode(result)  # (an unencodable result fails the handling)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            return settlement.after_failure(error)
        return success

    return invoke


def in_place_retry_stage(runtime: Host, invoke: Stage) -> Stage:
    """Retry a failed attempt in place, after its backoff, until it ends otherwise.

    For ordered subscribers (the key's later messages wait behind the failing one) and for
    backends without native delay (a retry copy could not wait on the broker).
    """
    policy = runtime.subscriber.retry
    revocable = runtime.revocable

    async def retry_in_place(settlement: Settlement) -> Outcome:
        message = settlement.message
        assert message is not None
        while True:
            outcome = await invoke(settlement)
            if settlement.in_place is not None:  # the handler called nack()
                outcome, settlement.in_place = settlement.in_place, None
            if not isinstance(outcome, Retry):
                return outcome
            pause = backoff(policy, message.attempt) if outcome.delay is None else outcome.delay
            logger.warning(
                "retrying message %s of %r in place in %.3gs (attempt %d of %d failed%s)",
                message.id,
                message.topic,
                pause,
                message.attempt,
                policy.max_attempts,
                _reason(outcome.error),
                exc_info=handler_traceback(outcome.error),
            )
            if runtime.listeners:
                runtime.listeners.retried(
                    message.topic, runtime.subscriber.group, message.id, message.attempt, pause
                )
            if not await runtime.pause(pause, settlement.delivery):
                return DROP  # stopping: unacked, the broker redelivers it
            if revocable and settlement.delivery.revoked:  # type: ignore[attr-defined]
                return DROP  # another consumer owns it now
            message.attempt += 1
            message.due = runtime.now()  # the next attempt is due now (its delivery delay)
            settlement.envelope = settlement.envelope._replace(attempt=message.attempt)

    return retry_in_place


def idempotency_stage(runtime: Host, run: Stage) -> Stage:
    """Run a message id at most once per group: begin a lease, skip what is already done, and
    release the lease when the run did not complete (the mark is written on ack)."""
    store = runtime.store
    group = runtime.group
    lease = runtime.idempotency_lease

    async def idempotent(settlement: Settlement) -> Outcome:
        message_id = settlement.envelope.id
        pause = 0.2
        while True:
            try:
                if runtime.running_ids.get(message_id, 0) > 1:
                    # A duplicate of a delivery running here: it waits for that one's outcome
                    # (the store's lease), and that one may wait on the clock: so wait parked.
                    first = await runtime.parked(
                        store.begin(group, message_id, lease), settlement.delivery
                    )
                else:
                    first = await store.begin(group, message_id, lease)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(
                    "idempotency store failed for message %s (%s); trying again in %.3gs",
                    message_id,
                    exc,
                    pause,
                )
                if not await runtime.pause(pause, settlement.delivery):
                    return DROP
                pause = min(pause * 2, 5.0)
        if not first:
            logger.debug("message %s already handled by %r; acking", message_id, group)
            settlement.completed = True  # nothing to mark: it is marked already
            return ACK
        try:
            outcome = await run(settlement)
            if outcome is ACK or settlement.settled:
                return outcome  # the lease turns into the mark when the ack is carried out
        except BaseException:
            await _release(store, group, message_id)
            raise
        await _release(store, group, message_id)
        return outcome

    return idempotent


async def _release(store: Any, group: str, message_id: str) -> None:
    try:
        await store.release(group, message_id)
    except Exception:
        # The lease expires by itself (idempotency_lease); a duplicate waits until then.
        logger.exception("could not release the idempotency lease of message %s", message_id)


def _reason(error: BaseException | None) -> str:
    return f": {type(error).__name__}: {error}" if error is not None else ""


def _bind(middleware: Middleware, message: Message, call_next: Next) -> Next:
    return lambda: middleware(message, call_next)
