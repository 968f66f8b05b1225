"""What happened in a run, in one sequence, and the invariants checked against it.

The fault-injecting transport reports what really reached the broker (publishes, acks); the
handlers report each attempt. From that one sequence the ledger checks:

- **nothing lost**: every published id ends handled successfully or as a dead letter;
- **every ack is covered**: a delivery is acked only after its handler succeeded for that id,
  or after a copy that carries it on (a retry copy with a higher attempt, or the dead-letter
  copy) reached the broker: "DLQ copy before the original was acked";
- **per-key order**: on an ordered subscriber, the ids of one key are resolved (first success
  or dead letter) in publish order;
- **attempts counted**: each id's attempts are 1..n without gaps, n <= ``max_attempts``.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass

from ... import headers as h
from ...transport import Delivery, OutgoingMessage
from .schedule import Schedule, SubscriberPlan


@dataclass(frozen=True)
class Event:
    sequence: int
    what: str  # publish, ack, start, ok
    subscriber: int
    kind: str  # main, retry, dlq (publish/ack); the handler outcome (start)
    message_id: str
    attempt: int


class Ledger:
    """Records a run (it is the wrapper's :class:`~.transport.Observer`) and checks it."""

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self.events: list[Event] = []
        self._sequence = itertools.count()
        self._topics: dict[str, tuple[int, str]] = {}
        for plan in schedule.subscribers:
            self._topics[plan.topic] = (plan.index, "main")
            self._topics[plan.retry_topic] = (plan.index, "retry")
            self._topics[plan.dead_letter_topic] = (plan.index, "dlq")
        self.expected: dict[int, list[tuple[str, str | None]]] = defaultdict(list)
        self._resolved: set[tuple[int, str]] = set()

    # -- recording ---------------------------------------------------------------------------

    def _add(self, what: str, topic: str, headers: dict[str, str] | None, fallback: str) -> None:
        found = self._topics.get(topic)
        if found is None:
            return
        subscriber, kind = found
        message_id = (headers or {}).get(h.ID) or fallback
        attempt = int((headers or {}).get(h.ATTEMPT) or 1)
        self._record(what, subscriber, kind, message_id, attempt)

    def _record(self, what: str, subscriber: int, kind: str, message_id: str, attempt: int) -> None:
        self.events.append(Event(next(self._sequence), what, subscriber, kind, message_id, attempt))
        if (what == "ok") or (what == "publish" and kind == "dlq"):
            self._resolved.add((subscriber, message_id))

    def published(self, message: OutgoingMessage) -> None:
        self._add("publish", message.topic, message.headers, message.message_id or "")

    def acked(self, delivery: Delivery) -> None:
        self._add("ack", delivery.topic, dict(delivery.headers), delivery.native_id)

    def expect(self, subscriber: int, message_id: str, key: str | None) -> None:
        """The driver publishes ``message_id`` (first call per id: its place in key order)."""
        if all(known != message_id for known, _ in self.expected[subscriber]):
            self.expected[subscriber].append((message_id, key))

    def started(self, subscriber: int, message_id: str, attempt: int, outcome: str) -> None:
        self._record("start", subscriber, outcome, message_id, attempt)

    def succeeded(self, subscriber: int, message_id: str, attempt: int) -> None:
        self._record("ok", subscriber, "main", message_id, attempt)

    # -- checking ------------------------------------------------------------------------------

    def unresolved(self) -> list[str]:
        return [
            message_id
            for subscriber, messages in self.expected.items()
            for message_id, _ in messages
            if (subscriber, message_id) not in self._resolved
        ]

    def violations(self, *, finished: bool = True) -> list[str]:
        """Every invariant broken; ``finished=False`` (the run was cut short as stuck) reports
        unresolved messages as such rather than as lost."""
        found: list[str] = []
        for plan in self.schedule.subscribers:
            found += self._check(plan, finished)
        return found

    def _check(self, plan: SubscriberPlan, finished: bool) -> list[str]:
        index = plan.index
        events = [event for event in self.events if event.subscriber == index]
        found: list[str] = []
        resolved_at: dict[str, int] = {}
        covered: dict[str, list[Event]] = defaultdict(list)  # what may justify an ack
        attempts: dict[str, set[int]] = defaultdict(set)
        for event in events:
            if event.what == "ok" or (event.what == "publish" and event.kind == "dlq"):
                resolved_at.setdefault(event.message_id, event.sequence)
            if event.what in ("ok", "publish"):
                covered[event.message_id].append(event)
            if event.what == "start":
                attempts[event.message_id].add(event.attempt)
            justified = event.what != "ack" or event.kind == "dlq"
            if not justified and not _justified(event, covered[event.message_id]):
                found.append(
                    f"t{index}: {event.message_id} (attempt {event.attempt}) acked with no "
                    "success and no retry or dead-letter copy published before"
                )
        for message_id, _ in self.expected[index]:
            if message_id not in resolved_at:
                found.append(
                    f"t{index}: {message_id} lost: never handled successfully, not dead-lettered"
                    if finished
                    else f"t{index}: {message_id} not resolved when the run was cut short"
                )
        for message_id, seen in attempts.items():
            if seen != set(range(1, max(seen) + 1)):
                found.append(f"t{index}: {message_id} attempts {sorted(seen)} have a gap")
            if max(seen) > plan.max_attempts:
                found.append(
                    f"t{index}: {message_id} attempt {max(seen)} > max_attempts {plan.max_attempts}"
                )
        if plan.ordered:
            by_key: dict[str, list[str]] = defaultdict(list)
            for message_id, key in self.expected[index]:
                if key is not None:
                    by_key[key].append(message_id)
            for key, published in by_key.items():
                done = sorted(
                    (m for m in published if m in resolved_at), key=resolved_at.__getitem__
                )
                in_order = [m for m in published if m in resolved_at]
                if done != in_order:
                    found.append(
                        f"t{index}: key {key!r} resolved out of publish order: {done} "
                        f"(published {in_order})"
                    )
        return found


def _justified(ack: Event, before: list[Event]) -> bool:
    for event in before:
        if event.sequence > ack.sequence:
            break
        if event.what == "ok":
            return True
        if event.kind == "dlq":
            return True
        if event.kind == "retry" and event.attempt > ack.attempt:
            return True
    return False
