"""The in-process "broker" behind ``memory://``: topics, group queues, delayed messages.

A topic fans each message out to one queue per consumer group; subscriptions of the same group
compete for that queue. Delayed messages wait on the hub's clock. Messages published to a
topic that no group consumes yet are kept (unclaimed) and handed to the first group that
subscribes, so a dead-letter topic can be read after the fact, as on a real broker.

Each topic also remembers its last :data:`HISTORY` messages (a bounded deque: one append per
message), which is what ``rewind`` hands to a group again.

A *held* topic (``Hub.hold``, used for dead-letter topics) also keeps a copy of every message
in a holding store that ``unimq dlq`` browses, like RabbitMQ's holding queue: held copies are
not "ready" work, so ``drain`` does not wait for them.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from typing import TYPE_CHECKING

from .. import envelope
from .. import headers as h
from ..clock import Clock

if TYPE_CHECKING:
    from .transport import MemorySubscription


#: How many of its latest messages a topic keeps for ``rewind`` (older ones cannot be replayed).
HISTORY = 10_000


class StoredMessage:
    __slots__ = ("body", "headers", "key", "sequence", "topic")

    def __init__(
        self, topic: str, key: str | None, headers: dict[str, str], body: bytes, sequence: int
    ) -> None:
        self.topic = topic
        self.key = key
        self.headers = headers
        self.body = body
        self.sequence = sequence  # publish order in the hub; also the broker's own id

    @property
    def native_id(self) -> str:
        return f"mem-{self.sequence}"

    @property
    def published_at(self) -> float | None:
        """The publish time (``unimq-published-at``); ``None`` for a message without it."""
        return envelope.parse_due(self.headers.get(h.PUBLISHED_AT))


class GroupQueue:
    """One consumer group's queue on one topic."""

    __slots__ = (
        "active",
        "broadcast",
        "hub",
        "items",
        "name",
        "ordered",
        "subscriptions",
        "topic",
        "waiters",
    )

    def __init__(self, hub: Hub, topic: str, name: str, *, broadcast: bool, ordered: bool) -> None:
        self.hub = hub
        self.topic = topic
        self.name = name
        self.broadcast = broadcast
        self.ordered = ordered
        self.items: deque[StoredMessage] = deque()
        self.waiters: deque[asyncio.Future[StoredMessage | None]] = deque()
        self.subscriptions: list[MemorySubscription] = []
        # Ordered groups have a single active subscription (like RabbitMQ's single active
        # consumer), so two processes never handle the same key at once.
        self.active: MemorySubscription | None = None

    def push(self, message: StoredMessage) -> None:
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                self.hub.unsettled += 1  # handed over: in flight from this instant
                waiter.set_result(message)
                return
        self.items.append(message)
        self.hub.ready += 1

    def push_front(self, message: StoredMessage) -> None:
        """Give back a delivery that was handed out but not acked (keeps its place in line)."""
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                self.hub.unsettled += 1
                waiter.set_result(message)
                return
        self.items.appendleft(message)
        self.hub.ready += 1


class Topic:
    __slots__ = ("groups", "held", "history", "unclaimed")

    def __init__(self) -> None:
        self.groups: dict[str, GroupQueue] = {}
        self.history: deque[StoredMessage] = deque(maxlen=HISTORY)
        self.unclaimed: deque[StoredMessage] = deque()
        # The dead-letter holding store, by sequence (insertion-ordered, O(1) removal).
        self.held: dict[int, StoredMessage] | None = None


class Hub:
    def __init__(self, name: str | None, clock: Clock) -> None:
        self.name = name
        self.clock = clock
        self.topics: dict[str, Topic] = {}
        self.ready = 0
        self.unsettled = 0
        self.parked = 0  # unsettled deliveries the pipeline holds on the clock (SupportsPark)
        self.clock_waiters = 0  # every delivery held on the clock, settled or not
        self.delayed = 0
        self._ids = itertools.count(1)

    def next_sequence(self) -> int:
        return next(self._ids)

    def topic(self, name: str) -> Topic:
        topic = self.topics.get(name)
        if topic is None:
            topic = self.topics[name] = Topic()
        return topic

    def hold(self, name: str) -> dict[int, StoredMessage]:
        """Keep a browsable copy of every message of topic ``name`` from now on."""
        topic = self.topic(name)
        if topic.held is None:
            topic.held = {}
        return topic.held

    def route(self, message: StoredMessage) -> None:
        topic = self.topic(message.topic)
        if topic.held is not None:
            topic.held[message.sequence] = message
        topic.history.append(message)
        if not topic.groups:
            topic.unclaimed.append(message)
            return
        for queue in topic.groups.values():
            queue.push(message)

    def schedule(self, message: StoredMessage, when: float) -> None:
        self.delayed += 1

        def fire() -> None:
            self.delayed -= 1
            self.route(message)

        self.clock.call_at(when, fire)

    def group_queue(
        self, topic_name: str, group: str, *, broadcast: bool, ordered: bool
    ) -> GroupQueue:
        topic = self.topic(topic_name)
        queue = topic.groups.get(group)
        if queue is None:
            queue = topic.groups[group] = GroupQueue(
                self, topic_name, group, broadcast=broadcast, ordered=ordered
            )
            while topic.unclaimed:
                queue.push(topic.unclaimed.popleft())
        return queue

    def drop_group(self, queue: GroupQueue) -> None:
        topic = self.topics.get(queue.topic)
        if topic is not None and topic.groups.get(queue.name) is queue:
            del topic.groups[queue.name]
            self.ready -= len(queue.items)
            queue.items.clear()

    def rewind(self, topic_name: str, group: str, since: float, *, dry_run: bool) -> int | None:
        """Queue for ``group`` again the remembered messages published at or after ``since``
        (those still queued for it are not doubled); how many. ``None``: no such group."""
        topic = self.topics.get(topic_name)
        queue = topic.groups.get(group) if topic is not None else None
        if queue is None or topic is None:
            return None
        queued = {message.sequence for message in queue.items}
        again = [
            message
            for message in topic.history
            if message.sequence not in queued
            and (published := message.published_at) is not None
            and published >= since
        ]
        if not dry_run:
            for message in again:
                queue.push(message)
        return len(again)

    def backlog_age(self, topic_name: str, group: str) -> float | None:
        """Seconds since the oldest message queued or unsettled for ``group`` was published."""
        topic = self.topics.get(topic_name)
        queue = topic.groups.get(group) if topic is not None else None
        if queue is None:
            return None
        oldest: float | None = None
        pending = [*queue.items] + [
            delivery._message
            for subscription in queue.subscriptions
            for delivery in subscription._unsettled
        ]
        for message in pending:
            published = message.published_at
            if published is not None and (oldest is None or published < oldest):
                oldest = published
        return 0.0 if oldest is None else max(0.0, self.clock.now() - oldest)

    def idle(self) -> bool:
        """Nothing in flight but parked deliveries, and nothing ready that a subscription could
        take now: messages of a group with no running subscriber wait for one, and messages
        queued while everything in flight is parked wait behind what is parked (an ordered key's
        backoff, a full lane) until the clock moves. ``wait_idle`` asks several loop turns in a
        row, so a worker between two receives is not mistaken for a stalled one."""
        if self.unsettled > self.parked:
            return False
        if self.ready == 0 or self.clock_waiters > 0:
            return True
        return not any(
            queue.items and queue.subscriptions
            for topic in self.topics.values()
            for queue in topic.groups.values()
        )

    async def wait_idle(self) -> None:
        """Return once nothing is ready or in flight (deliveries parked on the clock excepted)."""
        stable = 0
        while stable < 3:  # idle across a few loop iterations: no hand-over in progress
            if self.idle():
                stable += 1
                await asyncio.sleep(0)
            else:
                stable = 0
                await asyncio.sleep(0.001)


_named_hubs: dict[str, Hub] = {}


def named_hub(name: str, clock: Clock) -> Hub:
    hub = _named_hubs.get(name)
    if hub is None:
        hub = _named_hubs[name] = Hub(name, clock)
    return hub


def forget(name: str) -> None:
    """Discard the named hub and everything in it (for tests that reuse a name)."""
    _named_hubs.pop(name, None)
