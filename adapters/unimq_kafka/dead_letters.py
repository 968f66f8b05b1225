"""Dead-letter sessions on Kafka (:class:`~unimq.transport.SupportsDeadLetters`).

A dead-letter topic is an append-only log: a record cannot be taken out of the middle. So
the dead letters of a topic are defined as the records **from the committed offset of the
consumer group** ``unimq.dlq`` (:data:`~.names.DEAD_LETTER_GROUP`, one group for every DLQ
topic: Kafka keeps its offsets per topic and partition) **to the log end**; a topic the
group never committed on starts at its earliest retained record. Nothing ever joins that
group: a session *assigns* the partitions itself (no rebalance), and commits only when it
closes.

A session reads from those offsets up to the log end captured when it opened (records
dead-lettered afterwards belong to the next session) and remembers, per partition, what it
handed out and what was acked. :meth:`KafkaDeadLetters.close` then, for each partition with
an acked record:

1. re-appends to the end of the DLQ topic (same key, headers and body; ``acks=all``, waiting
   for the broker's acknowledgement) every record handed out and *not* acked that lies
   before the last acked one, since committing past it would otherwise drop it;
2. commits the group past the last acked record.

Records after the last acked one (handed out or not) are left in place. A crash between 1
and 2 leaves a duplicate of the re-appended records, never a loss; a crash before 1 changes
nothing. Purged and replayed records stay in the log until retention removes them; they are
only behind the group's offset. Run one session per DLQ topic at a time (two sessions would
overwrite each other's commits).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from unimq.errors import ConnectionFailedError, PublishError

from .admin import TopicAdmin
from .names import DEAD_LETTER_GROUP, check_topic
from .positions import PartitionSpan, group_consumer, read_spans
from .producer import KafkaProducer
from .record import KafkaRecord

logger = logging.getLogger("unimq.kafka")

#: Records fetched per ``consume()`` call, and how long one call waits.
_BATCH = 500
_POLL_SECONDS = 0.2
#: A read that gets nothing at all for this long fails (the broker is gone).
_STALL_SECONDS = 30.0


class KafkaDeadLetter(KafkaRecord):
    """A dead letter handed out by a session; :meth:`ack` removes it when the session closes."""

    __slots__ = ("_session",)

    def __init__(self, message: Any, session: KafkaDeadLetters) -> None:
        super().__init__(message)
        self._session = session

    async def ack(self) -> None:
        self._session._ack(self._message)


class _Partition:
    """What one session did in one partition: read ``[span.start, span.high)``."""

    __slots__ = ("acked", "last_acked", "reading", "span", "unacked")

    def __init__(self, span: PartitionSpan) -> None:
        self.span = span
        self.reading = span.backlog > 0
        self.unacked: dict[int, Any] = {}  # handed out, not acked: offset -> message
        self.last_acked: int | None = None
        self.acked = 0


class KafkaDeadLetters:
    """One pass over a DLQ topic; see the module docstring."""

    def __init__(
        self, topic: str, producer: KafkaProducer, consumer_config: Mapping[str, Any]
    ) -> None:
        self.topic = topic
        self._parts: dict[int, _Partition] = {}
        self._producer = producer
        self._config = {
            **consumer_config,
            "auto.offset.reset": "earliest",  # a start offset lost to retention: the oldest
            "enable.partition.eof": True,  # the end of a partition ends its reading
        }
        self._consumer: Any = None
        self._ready: list[Any] = []  # fetched, not handed out yet (reversed: pop() = oldest)
        self._lock = asyncio.Lock()
        self._closed = False

    # -- opening (blocking: runs in a worker thread) ---------------------------------------

    def _open(self, admin: TopicAdmin) -> None:
        """Read where ``unimq.dlq`` stands and assign what lies between there and the end."""
        consumer = group_consumer(self._config, DEAD_LETTER_GROUP)
        try:
            spans = read_spans(admin, consumer, self.topic) or []
            self._parts = {span.partition: _Partition(span) for span in spans}
            reading = [span for span in spans if span.backlog > 0]
            if reading:
                consumer.assign(
                    [KafkaTopicPartition(self.topic, s.partition, s.start) for s in reading]
                )
        except BaseException:
            consumer.close()
            raise
        if reading:
            self._consumer = consumer
        else:
            consumer.close()  # nothing to read

    # -- the SPI ---------------------------------------------------------------------------

    async def count(self) -> int:
        return sum(part.span.backlog - part.acked for part in self._parts.values())

    async def next(self) -> KafkaDeadLetter | None:
        async with self._lock:
            while not self._closed:
                if self._ready:
                    message = self._ready.pop()
                    self._parts[message.partition()].unacked[message.offset()] = message
                    return KafkaDeadLetter(message, self)
                if not any(part.reading for part in self._parts.values()):
                    return None
                fetched = await asyncio.to_thread(self._fetch)
                fetched.reverse()
                self._ready = fetched
            return None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            async with self._lock:  # a next() still fetching finishes first
                self._ready = []
                await self._settle()
        finally:
            if self._consumer is not None:
                await asyncio.to_thread(self._consumer.close)
                self._consumer = None

    # -- reading ---------------------------------------------------------------------------

    def _fetch(self) -> list[Any]:
        """The next records in range (at least one, unless every partition is done)."""
        consumer = self._consumer
        deadline = time.monotonic() + _STALL_SECONDS
        while True:
            fetched: list[Any] = []
            for message in consumer.consume(num_messages=_BATCH, timeout=_POLL_SECONDS):
                error = message.error()
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    if error.fatal():
                        raise ConnectionFailedError(
                            f"reading dead-letter topic {self.topic!r} failed: {error.str()}"
                        )
                    logger.debug("kafka dead letters %s: %s", self.topic, error.str())
                    continue
                part = self._parts.get(message.partition())
                if part is None or not part.reading:
                    continue
                if error is not None:  # the end of the partition's log
                    self._done(part)
                    continue
                offset = message.offset()
                if offset >= part.span.high:  # dead-lettered after the session opened
                    self._done(part)
                    continue
                fetched.append(message)
                if offset == part.span.high - 1:
                    self._done(part)
            if fetched or not any(part.reading for part in self._parts.values()):
                return fetched
            if time.monotonic() > deadline:
                raise ConnectionFailedError(
                    f"reading dead-letter topic {self.topic!r}: nothing arrived in "
                    f"{_STALL_SECONDS:.0f}s"
                )

    def _done(self, part: _Partition) -> None:
        part.reading = False
        try:
            self._consumer.pause([KafkaTopicPartition(self.topic, part.span.partition)])
        except KafkaException as exc:
            logger.debug("kafka dead letters %s: pause: %s", self.topic, exc)

    # -- settling --------------------------------------------------------------------------

    def _ack(self, message: Any) -> None:
        part = self._parts[message.partition()]
        offset = message.offset()
        if self._closed:
            logger.warning(
                "dead letter %s/%d/%d acked after its session closed: it stays in the topic",
                self.topic,
                part.span.partition,
                offset,
            )
            return
        if part.unacked.pop(offset, None) is None:
            return  # acked twice
        part.acked += 1
        if part.last_acked is None or offset > part.last_acked:
            part.last_acked = offset

    async def _settle(self) -> None:
        """Keep what must stay (re-append), then commit past the last acked records."""
        acked = [part for part in self._parts.values() if part.last_acked is not None]
        if not acked:
            return
        outcomes = await asyncio.gather(
            *(self._keep(part) for part in acked), return_exceptions=True
        )
        commits: list[KafkaTopicPartition] = []
        for part, outcome in zip(acked, outcomes, strict=True):
            if outcome is None and part.last_acked is not None:
                point = part.last_acked + 1
                commits.append(KafkaTopicPartition(self.topic, part.span.partition, point))
        if commits:
            await asyncio.to_thread(self._commit, commits)
        failed = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if failed:
            raise PublishError(
                f"could not re-append the kept dead letters of {self.topic!r}, so the ones "
                f"acked after them stay in the topic: {failed[0]}"
            ) from failed[0]

    async def _keep(self, part: _Partition) -> None:
        """Re-append the records of ``part`` handed out, not acked, before its last ack."""
        last = part.last_acked
        assert last is not None
        kept = [message for offset, message in part.unacked.items() if offset < last]
        if kept:
            logger.info(
                "re-appending %d kept dead letter(s) of %s partition %d",
                len(kept),
                self.topic,
                part.span.partition,
            )
        send = self._producer.send
        outcomes = await asyncio.gather(
            *(
                send(self.topic, message.value(), message.key(), message.headers() or [])
                for message in kept
            ),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    def _commit(self, offsets: list[KafkaTopicPartition]) -> None:
        try:
            answer = self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            raise ConnectionFailedError(
                f"could not commit the dead-letter offsets of {self.topic!r}: {exc}"
            ) from None
        errors = [tp.error for tp in answer or () if tp.error is not None]
        if errors:
            raise ConnectionFailedError(
                f"could not commit the dead-letter offsets of {self.topic!r}: {errors[0]}"
            )


async def open_dead_letters(
    topic: str,
    admin: TopicAdmin,
    producer: KafkaProducer,
    consumer_config: Mapping[str, Any],
) -> KafkaDeadLetters:
    """A session over ``topic``; a topic that does not exist is empty (and is not created)."""
    session = KafkaDeadLetters(check_topic(topic), producer, consumer_config)
    await asyncio.to_thread(session._open, admin)
    return session
