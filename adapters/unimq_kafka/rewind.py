"""Moving a consumer group back in time, and the age of its backlog (blocking: run in a thread).

Rewind: ``list_offsets`` by timestamp gives, per partition, the first offset published at or
after the time; the group's committed offset is set there where that is earlier than where the
group stands (a rewind never skips messages forward). Kafka only accepts a commit from outside
the group while the group has no members, so a group with running consumers is refused with a
clear message instead of a generation error (stop the subscribers, rewind, start them again).

Backlog age: the timestamp of the record at the group's position, in every partition where the
group is behind; the oldest one is the age. Record timestamps are the producer's send time
(``CreateTime``, millisecond granularity) unless the topic uses ``LogAppendTime``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from unimq.errors import ConfigurationError

from .admin import TopicAdmin, translate_error
from .positions import group_consumer, read_spans

_REQUEST_SECONDS = 15.0
#: How long reading the head record of one partition may take.
_READ_SECONDS = 10.0


def rewind_group(
    admin: TopicAdmin,
    config: Mapping[str, Any],
    topic: str,
    group: str,
    since: float,
    *,
    dry_run: bool,
) -> int | None:
    """Commit ``group``'s offsets on ``topic`` back to ``since``; how many records it will
    consume again. ``None``: no such topic."""
    members = admin.active_members(group)
    if members and not dry_run:
        raise ConfigurationError(
            f"kafka consumer group {group!r} has {members} active member(s): Kafka accepts "
            "new offsets only for a group with no running consumers; stop its subscribers, "
            "rewind, then start them again"
        )
    consumer = group_consumer(config, group)
    try:
        spans = read_spans(admin, consumer, topic)
        if spans is None:
            return None
        targets = admin.offsets_at(topic, [span.partition for span in spans], int(since * 1000))
        moves: list[KafkaTopicPartition] = []
        again = 0
        for span in spans:
            target = targets[span.partition]
            if target < 0:
                target = span.high  # nothing published since then in this partition
            target = max(target, span.low)
            if target < span.start:
                again += span.start - target
                moves.append(KafkaTopicPartition(topic, span.partition, target))
        if moves and not dry_run:
            try:
                consumer.commit(offsets=moves, asynchronous=False)
            except KafkaException as exc:
                raise translate_error(
                    exc, f"could not commit the rewound offsets of group {group!r} on {topic!r}"
                ) from None
        return again
    finally:
        consumer.close()


def backlog_age(
    admin: TopicAdmin, config: Mapping[str, Any], topic: str, group: str
) -> float | None:
    """Seconds since the oldest record ``group`` has not consumed was written; ``0.0`` with no
    backlog, ``None`` when there is no such topic or no record timestamp could be read."""
    consumer = group_consumer(config, group)
    try:
        spans = read_spans(admin, consumer, topic)
        if spans is None:
            return None
        behind = [span for span in spans if span.backlog > 0]
        if not behind:
            return 0.0
        consumer.assign([KafkaTopicPartition(topic, s.partition, s.start) for s in behind])
        oldest: dict[int, float] = {}
        deadline = time.monotonic() + _READ_SECONDS
        while len(oldest) < len(behind) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            partition = message.partition()
            if partition in oldest:
                continue
            kind, ms = message.timestamp()
            if kind != TIMESTAMP_NOT_AVAILABLE and ms > 0:
                oldest[partition] = ms / 1000
            consumer.pause([KafkaTopicPartition(topic, partition)])
        if not oldest:
            return None
        return max(0.0, time.time() - min(oldest.values()))
    finally:
        consumer.close()
