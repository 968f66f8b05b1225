"""Kafka producer transactions: ``broker.transaction()`` and ``@subscriber(transactional=True)``.

A transactional librdkafka producer is a different client from the transport's idempotent
one: it needs a ``transactional.id``, runs one transaction at a time and makes every produce
part of the open transaction. So the transport keeps a second producer for transactions,
created on first use (most services never open one) and guarded by a lock: transactions of
one transport run one after the other.

The ``transactional.id`` is stable per broker instance (``unimq-tx-<instance_id>``, or the
``transactional_id`` option): a restarted process with the same id fences its predecessor
(``init_transactions`` aborts what the dead one left open) instead of leaving its open
transaction to block ``read_committed`` readers until ``transaction.timeout.ms``.

Every librdkafka call here blocks (network round trips), so each runs in a worker thread, off
the event loop, with a bounded timeout. librdkafka's errors become typed unimq errors: an
abortable error aborts, a retriable one is tried again, a fatal one (fenced by a newer
instance) discards the client so the next transaction starts with a fresh one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from unimq.errors import AuthorizationError, NotConnectedError, PublishError
from unimq.transport import ConsumeCommitRefused, OutgoingMessage

from .admin import LibrdkafkaLog
from .headers import to_wire_dict

logger = logging.getLogger("unimq.kafka")

#: Bounds of the blocking transaction calls (seconds).
INIT_TIMEOUT = 30.0
COMMIT_TIMEOUT = 30.0
ABORT_TIMEOUT = 30.0
OFFSETS_TIMEOUT = 30.0
#: How long the broker keeps a transaction open before aborting it itself (a producer that
#: died mid-transaction with no successor); read_committed readers wait at most this long.
TRANSACTION_TIMEOUT_MS = 60_000
#: Retriable commit errors are tried this many times before the transaction is given up.
COMMIT_TRIES = 3

_AUTHORIZATION = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
}

#: A consume transaction's offsets refused because the group moved on (a rebalance): not the
#: handler's failure (:class:`unimq.transport.ConsumeCommitRefused`).
_GROUP_CHANGED = {
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.FENCED_INSTANCE_ID,
}

#: Where a staged message's topic is made to exist before it is produced (the admin's ensure).
Ensure = Callable[[str], Awaitable[None]]
#: The consumed delivery's offset to commit with the transaction, and where its group metadata
#: is read at commit time: ``(offsets, read group metadata)``.
ConsumedOffsets = tuple[list[Any], Callable[[], Any]]


def _error(exc: BaseException, doing: str) -> Exception:
    """A typed unimq error for a librdkafka failure (never the bare client traceback)."""
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    text = error.str() if isinstance(error, KafkaError) else str(exc)
    if isinstance(error, KafkaError) and error.code() in _AUTHORIZATION:
        return AuthorizationError(f"kafka refused to {doing}: {text}")
    return PublishError(f"kafka could not {doing}: {text}")


def _group_changed(exc: BaseException) -> bool:
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return isinstance(error, KafkaError) and error.code() in _GROUP_CHANGED


def _flag(exc: BaseException, name: str) -> bool:
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return isinstance(error, KafkaError) and bool(getattr(error, name)())


class TransactionalProducer:
    """The transport's transactional producer: one open transaction at a time."""

    def __init__(self, config: Mapping[str, Any], transactional_id: str) -> None:
        self._config = {
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
            **config,
            "transactional.id": transactional_id,
            "acks": "all",
            "enable.idempotence": True,
            "logger": LibrdkafkaLog("transactional producer"),
        }
        self.transactional_id = transactional_id
        self._producer: Any = None
        self._lock = asyncio.Lock()
        self._closed = False

    async def begin(self, ensure: Ensure) -> KafkaTransaction:
        """Wait for the previous transaction to end, then begin one (creating the client and
        registering its ``transactional.id`` with the coordinator on first use)."""
        await self._lock.acquire()
        try:
            if self._closed:
                raise NotConnectedError("the kafka transport is not connected")
            if self._producer is None:
                producer = Producer(self._config)
                try:
                    await asyncio.to_thread(producer.init_transactions, INIT_TIMEOUT)
                except KafkaException as exc:
                    raise _error(exc, "initialise transactions") from None
                self._producer = producer
            try:
                self._producer.begin_transaction()  # local: no round trip
            except KafkaException as exc:
                self._discard()
                raise _error(exc, "begin a transaction") from None
        except BaseException:
            self._lock.release()
            raise
        return KafkaTransaction(self, self._producer, ensure)

    def _end(self, failed_fatally: bool) -> None:
        if failed_fatally:
            self._discard()
        self._lock.release()

    def _discard(self) -> None:
        """Drop a client in a fatal state (fenced, or its state unknown): the next transaction
        starts a new one, whose ``init_transactions`` aborts anything left open."""
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.purge()
                producer.flush(0)
            except Exception:  # pragma: no cover - best effort on a broken client
                logger.debug("discarding the transactional producer failed", exc_info=True)

    async def close(self) -> None:
        """Wait for an open transaction to end, then release the client."""
        async with self._lock:
            self._closed = True
            producer, self._producer = self._producer, None
        if producer is not None:
            await asyncio.to_thread(producer.flush, 5.0)


class KafkaTransaction:
    """One open Kafka transaction (:class:`unimq.transport.TransportTransaction`).

    ``consumed`` (set by the consume-transform-produce path) is the offset to commit in the
    transaction, so the outputs and the input's consumption become visible together or never.
    Its group metadata is read at commit time, not at begin: a rebalance between the delivery
    and the commit (the handler ran, the producer lock was awaited) changes the generation, and
    offsets sent with the old one fail the commit (ILLEGAL_GENERATION).
    """

    def __init__(self, owner: TransactionalProducer, producer: Any, ensure: Ensure) -> None:
        self._owner = owner
        self._producer = producer
        self._ensure = ensure
        self._ended = False
        self.consumed: ConsumedOffsets | None = None

    async def publish(self, message: OutgoingMessage) -> None:
        if self._ended:
            raise PublishError("this kafka transaction has ended")
        await self._ensure(message.topic)
        key = message.key.encode() if message.key is not None else None
        headers = to_wire_dict(message.headers)
        while True:
            try:
                self._producer.produce(message.topic, message.body, key, headers=headers or None)
                return
            except BufferError:  # local queue full: let librdkafka send some
                await asyncio.to_thread(self._producer.poll, 0.05)
            except KafkaException as exc:
                raise _error(exc, f"stage a message for {message.topic!r}") from None
            except (TypeError, ValueError) as exc:
                raise PublishError(
                    f"kafka refused the message for {message.topic!r}: {exc}"
                ) from None

    async def commit(self) -> None:
        if self._ended:
            return
        producer = self._producer
        fatal = False
        try:
            if self.consumed is not None:
                offsets, read_metadata = self.consumed
                metadata = read_metadata()
                await asyncio.to_thread(
                    producer.send_offsets_to_transaction, offsets, metadata, OFFSETS_TIMEOUT
                )
            for attempt in range(COMMIT_TRIES):
                try:
                    await asyncio.to_thread(producer.commit_transaction, COMMIT_TIMEOUT)
                    return
                except KafkaException as exc:
                    if _flag(exc, "retriable") and attempt + 1 < COMMIT_TRIES:
                        continue
                    raise
        except KafkaException as exc:
            fatal = not _flag(exc, "txn_requires_abort")
            if not fatal:
                fatal = not await self._abort_quietly()
            if self.consumed is not None and _group_changed(exc):
                raise ConsumeCommitRefused(
                    f"kafka refused the consumed offset: {_error(exc, 'commit')}"
                ) from None
            raise _error(exc, "commit the transaction") from None
        except BaseException:  # cancelled mid-commit: the client's state is unknown
            fatal = True
            raise
        finally:
            self._ended = True
            self._owner._end(fatal)

    async def rollback(self) -> None:
        if self._ended:
            return
        aborted = False
        try:
            aborted = await self._abort_quietly()
        finally:
            self._ended = True
            self._owner._end(not aborted)

    async def _abort_quietly(self) -> bool:
        """Abort; ``False`` (logged) when that failed, so the client is replaced and the
        broker aborts the transaction (at the latest after its timeout)."""
        try:
            await asyncio.to_thread(self._producer.abort_transaction, ABORT_TIMEOUT)
            return True
        except KafkaException as exc:
            logger.warning("aborting a kafka transaction failed: %s", _error(exc, "abort"))
            return False


def consumed_offsets(
    topic: str, partition: int, offset: int, read_metadata: Callable[[], Any]
) -> ConsumedOffsets:
    """The offset that marks the message at ``offset`` consumed (the next one), for its group."""
    return [TopicPartition(topic, partition, offset + 1)], read_metadata
