"""The Kafka offset tracker never commits past a message that is not acknowledged.

A property over random interleavings of single acks and batch acks (``KafkaDelivery.ack`` and
``ack_many``, whose in-order fast paths skip the general book-keeping) across partitions whose
offsets have gaps (compaction, transaction markers): after every step each partition's commit
point is exactly one past the longest fully acknowledged prefix of what it handed out, and
``in_flight`` counts what is taken and not yet acknowledged.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("confluent_kafka")

import confluent_kafka
from unimq_kafka.offsets import OffsetTracker
from unimq_kafka.subscription import KafkaDelivery, delivery_class


def _expected(handed: list[int], acked: set[int]) -> int | None:
    """One past the last offset of the longest acknowledged prefix of ``handed``."""
    point = None
    for offset in handed:
        if offset not in acked:
            break
        point = offset + 1
    return point


@st.composite
def _scenario(draw: Any) -> tuple[dict[int, list[int]], list[list[tuple[int, int]]]]:
    """Offsets per partition (increasing, with gaps) and the acks as a list of steps, each
    a group of (partition, index) acked together (a group of one is a single ack)."""
    partitions = draw(st.integers(1, 3))
    offsets: dict[int, list[int]] = {}
    for partition in range(partitions):
        gaps = draw(st.lists(st.integers(1, 3), min_size=1, max_size=12))
        start = draw(st.integers(0, 5))
        offsets[partition] = [start + sum(gaps[:i]) for i in range(len(gaps))]
    everything = [(p, i) for p, values in offsets.items() for i in range(len(values))]
    acked = draw(st.lists(st.sampled_from(everything), unique=True)) if everything else []
    steps: list[list[tuple[int, int]]] = []
    while acked:
        size = draw(st.integers(1, len(acked)))
        steps.append(acked[:size])
        acked = acked[size:]
    return offsets, steps


async def _run(offsets: dict[int, list[int]], steps: list[list[tuple[int, int]]]) -> None:
    tracker = OffsetTracker()
    tracker.assign([("t", p) for p in offsets])
    make = delivery_class(tracker, None)
    deliveries: dict[tuple[int, int], KafkaDelivery] = {}
    for partition, values in offsets.items():
        with tracker.lock:
            handed = tracker.handed_locked(
                [
                    confluent_kafka.Message(topic="t", partition=partition, offset=o, value=b"body")
                    for o in values
                ],
                make,
            )
        assert tracker.take_many(handed) == handed
        for index, delivery in enumerate(handed):
            deliveries[(partition, index)] = delivery
    states = {p: tracker._parts[("t", p)] for p in offsets}
    acked: dict[int, set[int]] = {p: set() for p in offsets}
    for step in steps:
        group = [deliveries[item] for item in step]
        if len(group) == 1 and step[0][1] % 2:  # odd indexes alone: the single ack
            await group[0].ack()
        else:
            await make.ack_many(group)
        for partition, index in step:
            acked[partition].add(offsets[partition][index])
        for partition, values in offsets.items():
            state = states[partition]
            point = _expected(values, acked[partition])
            assert state.commit_point == point, (partition, values, sorted(acked[partition]))
            unacked = [o for o in values if o not in acked[partition]]
            if unacked and point is not None:
                assert point <= min(unacked)  # never past an unacknowledged message
            assert state.in_flight == len(values) - len(acked[partition])


@settings(max_examples=300, deadline=None)
@given(_scenario())
def test_the_commit_point_never_passes_an_unacknowledged_offset(
    scenario: tuple[dict[int, list[int]], list[list[tuple[int, int]]]],
) -> None:
    asyncio.run(_run(*scenario))


async def test_acking_again_changes_nothing() -> None:
    """ack and ack_many settle a delivery at most once (a batch retried after a partial
    ack_many): the second time neither counts it out of in_flight again nor moves anything."""
    offsets = {0: [0, 1, 2]}
    tracker = OffsetTracker()
    tracker.assign([("t", 0)])
    make = delivery_class(tracker, None)
    with tracker.lock:
        handed = tracker.handed_locked(
            [
                confluent_kafka.Message(topic="t", partition=0, offset=o, value=b"body")
                for o in offsets[0]
            ],
            make,
        )
    tracker.take_many(handed)
    await make.ack_many(handed[:2])
    await handed[0].ack()
    await make.ack_many(handed[:2])
    state = tracker._parts[("t", 0)]
    assert (state.commit_point, state.in_flight) == (2, 1)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(0, 3), max_size=30),
    st.sets(st.integers(0, 3)),
    st.booleans(),
)
def test_take_many_counts_per_partition_and_drops_revoked_ones(
    partitions: list[int], revoked: set[int], interleave_revocation: bool
) -> None:
    """``take_many`` counts a batch per partition (one ``Counter`` in C, a few additions under
    the lock): the deliveries of revoked partitions are dropped, in order, and only the
    others count as in flight; with nothing revoked it hands back the batch itself (no
    copy, no Python step per delivery)."""
    tracker = OffsetTracker()
    tracker.assign([("t", p) for p in range(4)])
    make = delivery_class(tracker, None)
    next_offset = dict.fromkeys(range(4), 0)
    messages = []
    for partition in partitions:
        messages.append(
            confluent_kafka.Message(
                topic="t", partition=partition, offset=next_offset[partition], value=b"v"
            )
        )
        next_offset[partition] += 1
    with tracker.lock:
        handed = tracker.handed_locked(messages, make)
    if interleave_revocation:
        tracker.begin_revoke([("t", p) for p in revoked])
    taken = tracker.take_many(handed)
    gone = revoked if interleave_revocation else set()
    assert taken == [d for d in handed if d._state.tp[1] not in gone]
    if not gone & set(partitions):
        assert taken is handed
    for partition in range(4):
        state = tracker._parts[("t", partition)]
        expected = 0 if partition in gone else partitions.count(partition)
        assert state.in_flight == expected
