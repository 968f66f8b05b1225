"""What the consumer thread buffers from one ``consume()`` call: the records of partitions
assigned here, in order; error events are logged, never buffered.

The common case (no error, one topic, every partition assigned) is told in C over the whole
batch (``ConsumerThread._all_assigned``) and buffered with one ``extend``; everything else
goes through the per-message loop. No broker: ``consume()`` is a fake that returns a batch.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("confluent_kafka")

import confluent_kafka
from unimq_kafka.consumer import ConsumerThread
from unimq_kafka.offsets import OffsetTracker


class _Consumer:
    def __init__(self, batch: list[Any]) -> None:
        self.batch = batch

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        batch, self.batch = self.batch, []
        return batch


_EOF = confluent_kafka.KafkaError(confluent_kafka.KafkaError._PARTITION_EOF)
_items = st.lists(
    st.tuples(st.sampled_from(["t", "u"]), st.integers(0, 2), st.booleans()), max_size=12
)
_assigned = st.sets(st.tuples(st.sampled_from(["t", "u"]), st.integers(0, 2)))


@given(_items, _assigned)
def test_a_poll_buffers_the_records_of_assigned_partitions_in_order(
    items: list[tuple[str, int, bool]], assigned: set[tuple[str, int]]
) -> None:
    messages = [
        confluent_kafka.Message(
            topic=topic, partition=partition, offset=i, value=b"v", error=_EOF if error else None
        )
        for i, (topic, partition, error) in enumerate(items)
    ]
    thread = ConsumerThread(
        {}, ["t", "u"], tracker=OffsetTracker(), notify=lambda: None, name="t", revoke_timeout=1
    )
    thread._assigned.update(assigned)
    thread._consumer = _Consumer(messages)
    thread._poll(100, 0)
    expected = [m for m in messages if m.error() is None and (m.topic(), m.partition()) in assigned]
    assert list(thread._ready) == expected
