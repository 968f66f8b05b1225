"""``async with broker.transaction() as tx``: native broker transactions (Kafka producer
transactions, RocketMQ half messages), and the check-back that resolves an orphaned one.

The broker does the atomicity; this module gives it one shape on every backend that has it:
``tx.publish`` stages a message, leaving the block commits, an exception inside it rolls back.
A backend without native transactions (RabbitMQ, memory) refuses ``broker.transaction()`` with
an :class:`~unimq.errors.UnsupportedFeatureError` that points to the transactional outbox,
which gives the same guarantee with the database as the source of truth (docs/consistency.md).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import envelope, validation
from .errors import ConfigurationError, MessageTooLargeError, UnimqError, UnsupportedFeatureError
from .message import Message
from .transport import (
    Delivery,
    OutgoingMessage,
    SupportsTransactions,
    TransactionCheck,
    Transport,
    TransportTransaction,
)

if TYPE_CHECKING:
    from .broker import PublishReceipt

logger = logging.getLogger("unimq.transactions")

#: The transaction of the transactional handler running in this context (``@subscriber(...,
#: transactional=True)``): ``Broker.publish`` stages into it, so the handler's code is unchanged.
CURRENT: ContextVar[Transaction | None] = ContextVar("unimq_transaction", default=None)

#: The application's check-back: ``async def check(message: Message) -> bool`` (commit?).
TransactionChecker = Callable[[Message], Awaitable[bool]]


def refuse_reason(transport: Transport) -> str | None:
    """Why ``broker.transaction()`` cannot run on this transport, or ``None`` when it can."""
    if transport.capabilities.transactions and isinstance(transport, SupportsTransactions):
        return None
    return (
        "this backend has no native transactions: write the message with a transactional outbox "
        "in your database transaction instead (unimq_sql.SQLOutbox, docs/consistency.md)"
    )


def check_not_nested() -> None:
    """Refuse ``broker.transaction()`` inside a transactional handler: on one producer it would
    wait for the handler's own transaction, which waits for it."""
    if CURRENT.get() is not None:
        raise UnimqError(
            "a transactional handler is already in a transaction: publish with "
            "broker.publish, which joins it (a second transaction would wait for the first)"
        )


def checker_adapter(checker: Any) -> TransactionCheck | None:
    """The transport-level check-back for ``Broker(transaction_checker=...)``: decodes the staged
    message and asks the application. ``None`` when no checker was given."""
    if checker is None:
        return None
    if not callable(checker):
        raise ConfigurationError(
            f"transaction_checker must be 'async def check(message: Message) -> bool', "
            f"got {checker!r}"
        )

    async def check(delivery: Delivery) -> bool:
        message = envelope.message(delivery, envelope.read(delivery), "")
        verdict = checker(message)
        if isinstance(verdict, Awaitable):
            verdict = await verdict
        if not isinstance(verdict, bool):
            raise ConfigurationError(
                f"transaction_checker returned {verdict!r} for message {message.id!r}; "
                "it must return True (commit) or False (roll back)"
            )
        return verdict

    return check


class Transaction:
    """One native transaction; use it through ``async with broker.transaction() as tx``.

    Publishes are validated exactly like ``Broker.publish`` before anything is staged, so a bad
    argument raises inside the block (and so rolls the transaction back) instead of failing
    the commit.
    """

    def __init__(
        self,
        transport: Transport,
        now: Callable[[], float],
        max_messages: int | None,
        native: TransportTransaction | None = None,
    ) -> None:
        self._transport = transport
        self._now = now
        self._max_messages = max_messages
        # Already begun when the pipeline opened it for a transactional handler.
        self._native: TransportTransaction | None = native
        self._staged = 0
        self._done = False

    async def __aenter__(self) -> Transaction:
        check_not_nested()
        assert isinstance(self._transport, SupportsTransactions)
        self._native = await self._transport.begin_transaction()
        return self

    async def publish(
        self,
        topic: str,
        body: Any,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: timedelta | float | None = None,
        deliver_at: datetime | None = None,
        message_id: str | None = None,
    ) -> PublishReceipt:
        """Stage ``body`` for ``topic``; subscribers see it only after the block commits."""
        from .broker import PublishReceipt

        native = self._native
        if native is None or self._done:
            raise UnimqError("publish inside 'async with broker.transaction() as tx:' only")
        if self._max_messages is not None and self._staged >= self._max_messages:
            raise UnsupportedFeatureError(
                f"this backend's transactions hold at most {self._max_messages} message(s); "
                "publish the others after the commit, or use the transactional outbox "
                "(docs/consistency.md)"
            )
        topic, payload, wire, key, message_id, content_type, due = validation.prepare_publish(
            topic, body, key, headers, delay, deliver_at, message_id, self._now
        )
        if due is not None:
            raise UnsupportedFeatureError(
                "a transactional publish cannot be delayed on this backend; publish the delayed "
                "message after the commit, or use the transactional outbox (docs/consistency.md)"
            )
        size = self._transport.capabilities.max_message_size
        if size is not None and len(payload) > size:
            raise MessageTooLargeError(
                f"message for {topic!r} is {len(payload)} bytes; this backend accepts at most "
                f"{size} bytes"
            )
        await native.publish(OutgoingMessage(topic, payload, wire, key, message_id, content_type))
        self._staged += 1
        return PublishReceipt(message_id, topic)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.finish(commit=exc is None)

    async def finish(self, *, commit: bool) -> None:
        """Commit (raising when the outcome is not durable) or roll back (never raising: the
        caller's own failure is the one to report). Later publishes are refused."""
        native = self._native
        if native is None or self._done:
            return
        self._done = True
        if commit:
            await native.commit()
            return
        try:
            await native.rollback()
        except Exception:  # the block's own exception is the one the caller must see
            logger.exception("rolling back a broker transaction failed; the broker will expire it")
