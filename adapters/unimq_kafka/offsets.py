"""Which offsets may be committed: only past the highest *contiguous* acknowledged one.

Kafka's consumer position is one number per partition, but unimq handles up to
``concurrency`` messages of a partition at once and they finish in any order. Committing the
offset of whatever finished last would skip messages still running (lost if the process
dies). So each partition remembers the offsets it handed out, in order, and the acknowledged
ones; the commit point advances only across a prefix that is fully acknowledged.

The event loop hands out (a batch at a time, taking what the consumer thread has read), takes
and acknowledges; the consumer thread commits. One lock guards both sides; every operation
under it is O(1) (amortised, per message).
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Mapping
from itertools import islice
from operator import attrgetter
from typing import Any, Protocol, TypeVar

TopicPartition = tuple[str, int]
T = TypeVar("T")


class PartitionOffsets:
    """Book-keeping of one assigned partition; replaced by a fresh object on re-assignment."""

    __slots__ = (
        "acked",
        "commit_point",
        "committed",
        "handed",
        "in_flight",
        "released",
        "revoked",
        "tp",
    )

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.handed: deque[int] = deque()  # handed out, not yet part of the committed prefix
        self.acked: set[int] = set()
        self.in_flight = 0  # taken by a worker, not yet acknowledged
        self.commit_point: int | None = None  # next offset to commit (last done + 1)
        self.committed: int | None = None  # what was last sent to the broker
        self.revoked = False  # no longer handed to workers
        self.released = False  # forgotten: late acknowledgements are ignored


_STATE = attrgetter("_state")


def _advance(state: PartitionOffsets) -> None:
    """Move ``state``'s commit point across the acknowledged head of what it handed out."""
    acked = state.acked
    handed = state.handed
    last: int | None = None
    while handed and handed[0] in acked:
        last = handed.popleft()
        acked.discard(last)
    if last is not None:
        state.commit_point = last + 1


class HandsOut(Protocol[T]):
    """What hands a batch of consumed records out as deliveries: a subscription's delivery
    class (``subscription.delivery_class``)."""

    def hand_out(
        self, messages: list[Any], parts: Mapping[TopicPartition, PartitionOffsets]
    ) -> list[T]: ...


class OffsetTracker:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._parts: dict[TopicPartition, PartitionOffsets] = {}

    def assign(self, tps: list[TopicPartition]) -> None:
        with self.lock:
            for tp in tps:
                old = self._parts.get(tp)
                if old is not None:
                    old.revoked = old.released = True
                self._parts[tp] = PartitionOffsets(tp)

    def handed_locked(self, messages: list[Any], deliveries: HandsOut[T]) -> list[T]:
        """Hand out a batch of consumed messages (in offset order within a partition), ``lock``
        held by the caller: ``deliveries.hand_out`` makes the deliveries of those of assigned
        partitions and registers their offsets as handed out, the whole batch in one call
        (``subscription.KafkaDelivery.hand_out``: one loop, a partition's state looked up once
        per run of its records)."""
        return deliveries.hand_out(messages, self._parts)

    def take_many(self, deliveries: list[Any]) -> list[Any]:
        """``take`` for a batch (each item has ``_state``), under one lock: the deliveries of
        partitions not revoked meanwhile, in order (``deliveries`` itself when none was).
        The deliveries are counted per partition first, outside the lock and in C
        (``Counter`` over ``map``): a batch spans a few partitions, so the lock is held for a
        few additions, not a Python step per delivery."""
        counts = Counter(map(_STATE, deliveries))
        revoked: set[PartitionOffsets] = set()
        with self.lock:
            for state, count in counts.items():
                if state.revoked:
                    revoked.add(state)  # (decided here, under the lock, as it is counted)
                else:
                    state.in_flight += count
        if not revoked:
            return deliveries
        return [delivery for delivery in deliveries if delivery._state not in revoked]

    def ack(self, state: PartitionOffsets, offset: int) -> None:
        with self.lock:
            state.in_flight -= 1
            if state.released:
                return  # released already: the new owner redelivers it (at-least-once)
            handed = state.handed
            acked = state.acked
            if not acked and handed and handed[0] == offset:
                # In order (the common case): the head itself, nothing acked beyond it.
                handed.popleft()
                state.commit_point = offset + 1
                return
            acked.add(offset)
            _advance(state)

    def ack_many(self, acks: Mapping[PartitionOffsets, list[int]]) -> None:
        """``ack`` for many (a batch handler's success), offsets grouped by partition, under
        one lock; each partition's commit point is advanced once, after all its offsets are
        in. The common case, a partition's offsets being exactly the head of what it handed
        out with nothing acked beyond it, is one comparison and a bulk removal."""
        with self.lock:
            for state, offsets in acks.items():
                state.in_flight -= len(offsets)
                if state.released:
                    continue  # released already: the new owner redelivers them
                handed = state.handed
                acked = state.acked
                count = len(offsets)
                if (
                    not acked
                    and count <= len(handed)
                    and handed[0] == offsets[0]
                    and list(islice(handed, count)) == offsets
                ):
                    if count == len(handed):
                        handed.clear()
                    else:
                        popleft = handed.popleft
                        for _ in range(count):
                            popleft()
                    state.commit_point = offsets[-1] + 1
                    continue
                acked.update(offsets)
                _advance(state)

    def drop(self, state: PartitionOffsets) -> None:
        """A taken delivery of a revoked partition is given up unacknowledged (the core will
        not run it): it no longer holds up the revocation; its offset stays uncommitted."""
        with self.lock:
            state.in_flight -= 1

    def begin_revoke(self, tps: list[TopicPartition]) -> list[PartitionOffsets]:
        """Stop handing out ``tps``; returns their states to wait on (``in_flight`` → 0)."""
        with self.lock:
            states = [self._parts[tp] for tp in tps if tp in self._parts]
            for state in states:
                state.revoked = True
            return states

    def in_flight(self, states: list[PartitionOffsets]) -> int:
        with self.lock:
            return sum(state.in_flight for state in states)

    def release(self, tps: list[TopicPartition]) -> list[tuple[TopicPartition, int]]:
        """Forget ``tps``; returns their final commit points not yet committed."""
        with self.lock:
            commits: list[tuple[TopicPartition, int]] = []
            for tp in tps:
                state = self._parts.pop(tp, None)
                if state is None:
                    continue
                state.revoked = state.released = True
                point = state.commit_point
                if point is not None and point != state.committed:
                    commits.append((tp, point))
            return commits

    def due(self) -> list[tuple[TopicPartition, int]]:
        """Commit points that moved since the last commit (marked as sent)."""
        with self.lock:
            commits: list[tuple[TopicPartition, int]] = []
            for tp, state in self._parts.items():
                point = state.commit_point
                if point is not None and point != state.committed:
                    state.committed = point
                    commits.append((tp, point))
            return commits

    def commit_failed(self, tp: TopicPartition, offset: int) -> None:
        with self.lock:
            state = self._parts.get(tp)
            if state is not None and state.committed == offset:
                state.committed = None  # send it again with the next batch

    def assigned(self) -> list[TopicPartition]:
        with self.lock:
            return list(self._parts)
