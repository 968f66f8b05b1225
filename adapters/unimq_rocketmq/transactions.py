"""RocketMQ transactional (half) messages behind ``async with broker.transaction() as tx``.

How the client's transactions map onto unimq's (docs/backends/rocketmq.md, "Transactions"):

- ``tx.publish`` sends a *half message* (``Producer.send(message, transaction)``): stored by the
  broker, invisible to every consumer; leaving the block commits it
  (``Transaction.commit``), an exception rolls it back.
- A plain ``broker.publish`` to a transactional topic (which takes nothing but half messages)
  is one half message committed at once, marked so that its check-back commits it.
- The client holds exactly one half message per transaction, so ``max_transaction_messages``
  is 1; a half message cannot carry a message group (FIFO) or a delivery time, so
  transactional topics are neither ordered nor delayed.
- A half message left open (the producer died, or its commit never arrived) is *checked back*:
  after ``transactionTimeOut`` the broker asks a producer that declares the topic, every
  ``transactionCheckInterval``, until it gets an answer or gives up (``transactionCheckMax``).
  The client asks :class:`CheckBridge` on a thread of its own; the bridge runs the
  application's ``transaction_checker`` on the event loop and answers with its verdict.

The client is thread-based and blocking here (``send`` with a transaction, ``commit``,
``rollback`` block until the broker answers), so every call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any

from unimq.errors import PublishError, UnsupportedFeatureError
from unimq.transport import OutgoingMessage, TransactionCheck

from . import codec

logger = logging.getLogger("unimq.rocketmq.transactions")

#: rocketmq.grpc_protocol.TransactionResolution (no import: rocketmq loads lazily).
UNKNOWN, COMMIT, ROLLBACK = 0, 1, 2
#: rocketmq.grpc_protocol.MessageType.TRANSACTION.
TRANSACTION_TYPE = 4


class CheckedMessage(codec.Received):
    """A half message the broker asks about, as the :class:`~unimq.transport.Delivery` that
    ``TransportContext.check_transaction`` takes (``ack`` does nothing: nothing to settle)."""

    __slots__ = ("topic",)

    def __init__(self, message: Any) -> None:
        super().__init__(message)
        self.topic: str = message.topic

    async def ack(self) -> None:
        return None


class CheckBridge:
    """The client's transaction checker: answers the broker's check-back for an orphaned half
    message with the application's verdict.

    The client calls :meth:`check` on its own check thread; the application's checker is a
    coroutine of the transport's event loop, so it is scheduled there and waited for here,
    for at most ``timeout`` seconds. ``True`` commits, ``False`` rolls back; no checker, an
    exception, a timeout or a closed loop answer *unknown*, and the broker asks again later
    (until ``transactionCheckMax``, after which it discards the half message).
    """

    def __init__(self, check: TransactionCheck | None, timeout: float) -> None:
        self._check = check
        self._timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def check(self, message: Any) -> int:
        ids = f"message {getattr(message, 'message_id', '?')} on {getattr(message, 'topic', '?')!r}"
        if (getattr(message, "properties", None) or {}).get(codec.AUTOCOMMIT) == "1":
            logger.info("transaction check-back for %s: commit (a plain publish)", ids)
            return COMMIT
        check, loop = self._check, self._loop
        if check is None or loop is None:
            logger.warning(
                "RocketMQ asks whether to commit the open transaction of %s, and no "
                "transaction_checker is configured (Broker(url, transaction_checker=...)): "
                "answering unknown; the broker asks again and finally discards it",
                ids,
            )
            return UNKNOWN
        future: concurrent.futures.Future[bool] | None = None
        try:
            asking = _ask(check, message)
            try:
                future = asyncio.run_coroutine_threadsafe(asking, loop)
            except BaseException:
                asking.close()  # the loop is closed: never scheduled, never awaited
                raise
            verdict = future.result(self._timeout)
        except concurrent.futures.TimeoutError:
            if future is not None:
                future.cancel()
            logger.warning(
                "transaction_checker did not answer for %s within %.0f s: answering unknown "
                "(the broker asks again)",
                ids,
                self._timeout,
            )
            return UNKNOWN
        except Exception as exc:
            # Text, not the exception: a log record that kept it would keep its frames alive.
            reason = f"{type(exc).__name__}: {exc}"
            logger.warning(
                "transaction_checker failed for %s: %s; answering unknown (the broker asks again)",
                ids,
                reason,
            )
            return UNKNOWN
        logger.info("transaction check-back for %s: %s", ids, "commit" if verdict else "roll back")
        return COMMIT if verdict else ROLLBACK


async def _ask(check: TransactionCheck, message: Any) -> bool:
    return await check(CheckedMessage(message))


class RocketMQTransaction:
    """One client transaction: at most one half message, then one commit or one rollback."""

    def __init__(self, transport: Any, producer: Any, native: Any) -> None:
        self._transport = transport
        self._producer = producer
        self._native = native
        self._sent = False
        self._topic = ""

    async def publish(self, message: OutgoingMessage, *, autocommit: bool = False) -> None:
        if self._sent:
            raise UnsupportedFeatureError(
                "a RocketMQ transaction holds one half message; publish the others after the "
                "commit, or use the transactional outbox (docs/consistency.md)"
            )
        if message.deliver_at is not None:
            raise UnsupportedFeatureError(
                "a RocketMQ half message cannot carry a delivery time; publish the delayed "
                "message after the commit, or use the transactional outbox"
            )
        physical = await self._transport.prepare_transaction_topic(message.topic)
        # ``mixed=True``: no delivery timestamp, so the client sends a TRANSACTION message.
        outgoing = codec.to_rocketmq(message, physical, fifo=False, mixed=True)
        if autocommit:
            outgoing.properties[codec.AUTOCOMMIT] = "1"
        self._topic = message.topic
        try:
            await asyncio.to_thread(self._producer.send, outgoing, self._native)
        except Exception as exc:
            await self._transport.send_failed(self._producer, exc)
            raise PublishError(
                f"RocketMQ did not accept the half message for {message.topic!r} (topic "
                f"{physical!r}): {type(exc).__name__}: {exc}"
            ) from None
        self._sent = True

    async def commit(self) -> None:
        if not self._sent:
            return  # nothing staged: nothing to commit
        try:
            await asyncio.to_thread(self._native.commit)
        except Exception as exc:
            raise PublishError(
                f"committing the RocketMQ transaction on {self._topic!r} failed: "
                f"{type(exc).__name__}: {exc}. The half message stays open: the broker checks "
                "it back with transaction_checker, which decides"
            ) from None

    async def rollback(self) -> None:
        if not self._sent:
            return
        try:
            await asyncio.to_thread(self._native.rollback)
        except Exception as exc:
            raise PublishError(
                f"rolling back the RocketMQ transaction on {self._topic!r} failed: "
                f"{type(exc).__name__}: {exc}. The half message stays invisible until the "
                "broker's check-back resolves it"
            ) from None
