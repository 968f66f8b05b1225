"""Where a consumer group stands in a topic: what ``lag`` and the dead-letter sessions read.

Per partition: the first retained offset and the log end (AdminClient ``list_offsets``) and
the group's committed offset. The committed offsets are read with a ``Consumer`` of the
group (``committed()``), which only queries: it never subscribes, so it never joins the
group or triggers a rebalance. Not with ``AdminClient.list_consumer_group_offsets``: up to
librdkafka 2.16 at least, that call can crash the process (a NULL dereference) when the
coordinator answers ``NOT_COORDINATOR`` or is still loading the group
(confluentinc/librdkafka#5040), which is what a group the broker has not seen yet gets.

Everything here blocks: call it from a worker thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from .admin import ErrorLog, LibrdkafkaLog, TopicAdmin, translate_error

logger = logging.getLogger("unimq.kafka")

_REQUEST_SECONDS = 15.0
#: Transient errors (a coordinator still loading, a leader moving) are retried this long.
_RETRY_SECONDS = 30.0
_TRANSIENT_CODES = frozenset(
    {
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
    }
)


@dataclass(frozen=True)
class PartitionSpan:
    """Where a consumer group stands in one partition.

    ``low``/``high``: the first retained offset and the log end (high watermark).
    ``committed``: the group's committed offset, ``None`` if it has none there; the group then
    starts at ``low`` (unimq's groups use ``auto.offset.reset=earliest``).
    """

    partition: int
    low: int
    high: int
    committed: int | None

    @property
    def start(self) -> int:
        """The next offset the group reads (a committed offset lost to retention: ``low``)."""
        committed = self.committed
        if committed is None:
            return self.low
        return min(max(committed, self.low), self.high)

    @property
    def backlog(self) -> int:
        """Records from :attr:`start` to the log end: what the group has not consumed yet."""
        return self.high - self.start


def group_consumer(config: Mapping[str, Any], group: str) -> Any:
    """A consumer of ``group`` that reads offsets or assigns partitions; never subscribes."""
    return Consumer(
        {
            **config,
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "error_cb": ErrorLog("consumer"),
            "logger": LibrdkafkaLog("consumer"),
        }
    )


def read_spans(admin: TopicAdmin, consumer: Any, topic: str) -> list[PartitionSpan] | None:
    """The position of ``consumer``'s group in each partition of ``topic``; ``None`` if there
    is no such topic. Nothing is created (neither the topic nor the group)."""
    deadline = time.monotonic() + _RETRY_SECONDS
    while True:
        try:
            ends = admin.log_ends(topic)
            if ends is None:
                return None
            committed = _committed(consumer, topic, list(ends))
            return [
                PartitionSpan(partition, low, high, committed.get(partition))
                for partition, (low, high) in ends.items()
            ]
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            transient = isinstance(error, KafkaError) and (
                error.retriable() or error.code() in _TRANSIENT_CODES
            )
            if not transient or time.monotonic() > deadline:
                raise translate_error(
                    exc, f"could not read the consumer group offsets of kafka topic {topic!r}"
                ) from None
            logger.debug("offsets of kafka topic %r: %s; retrying", topic, exc)
            time.sleep(0.2)


def group_spans(
    admin: TopicAdmin, config: Mapping[str, Any], topic: str, group: str
) -> list[PartitionSpan] | None:
    """:func:`read_spans` for ``group`` with a consumer of its own, closed afterwards."""
    consumer = group_consumer(config, group)
    try:
        return read_spans(admin, consumer, topic)
    finally:
        consumer.close()


def _committed(consumer: Any, topic: str, partitions: list[int]) -> dict[int, int]:
    """The committed offsets (partitions without one are left out)."""
    answer = consumer.committed(
        [KafkaTopicPartition(topic, partition) for partition in partitions],
        timeout=_REQUEST_SECONDS,
    )
    committed: dict[int, int] = {}
    for tp in answer:
        if tp.error is not None:
            raise KafkaException(tp.error)
        if tp.offset >= 0:
            committed[tp.partition] = tp.offset
    return committed
