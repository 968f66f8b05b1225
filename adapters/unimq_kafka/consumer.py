"""The consumer thread: one librdkafka consumer, polled by one dedicated thread.

librdkafka's ``consume()`` blocks, and its rebalance callbacks run inside it, so the consumer
lives on its own thread and talks to the event loop in two directions only:

- messages go to the loop in batches: the thread reads up to ``buffer`` messages ahead and
  tells the loop (``notify``, at most one ``call_soon_threadsafe`` pending); the loop takes
  them itself (:meth:`ConsumerThread.take`) whenever its own queue runs dry, never more than
  ``prefetch`` ahead of the workers, so a busy consumer moves messages in batches without
  waiting for this thread. A slow handler back-pressures fetching instead of filling memory:
  a full buffer stops the reading (a backlog that lasts pauses the partitions, so the thread
  keeps polling for rebalances and ``max.poll.interval.ms`` without buffering more);
- acknowledgements come back through the :class:`~.offsets.OffsetTracker`; the thread commits
  the contiguous prefix every few tens of milliseconds, asynchronously.

On a revocation it stops handing out the partitions, waits (bounded) for the deliveries
workers already hold, commits, and only then lets librdkafka give the partitions away, so
the next owner starts exactly after what was handled here.

A *gate* (used by the delay scheduler) can hold a partition's head back until it is due: the
partition is paused meanwhile, so the thread reads nothing behind it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from itertools import repeat
from operator import methodcaller
from typing import Any, TypeVar

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from .errors import AUTHORIZATION_CODES, ErrorLog, LibrdkafkaLog
from .offsets import HandsOut, OffsetTracker, TopicPartition

logger = logging.getLogger("unimq.kafka")
T = TypeVar("T")

CONSUMER_DEFAULTS: dict[str, Any] = {
    # Incremental rebalancing: a joining or leaving member moves only the partitions that
    # change owner, so the others keep consuming (and the delay scheduler keeps its timing).
    "partition.assignment.strategy": "cooperative-sticky",
    "session.timeout.ms": 10_000,
    "heartbeat.interval.ms": 1000,
    "fetch.wait.max.ms": 100,
    "enable.partition.eof": False,
    # librdkafka's default, stated: aborted transactions' messages are never delivered, and
    # committed ones only once their transaction commits (docs/consistency.md).
    "isolation.level": "read_committed",
}

Gate = Callable[[Any], float]

_NO_LEADER_YET = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
}
_ERROR = methodcaller("error")
_TOPIC = methodcaller("topic")
_PARTITION = methodcaller("partition")
_popleft = deque.popleft
_COMMIT_EVERY = 0.05
_BACKLOG_PAUSE_AFTER = 1.0
_MAX_BATCH = 1000


def _log_end(consumer: Any, tp: Any) -> int:
    """The partition's high watermark, retried while a just-created topic has no leader yet."""
    deadline = time.monotonic() + 10
    while True:
        try:
            _, high = consumer.get_watermark_offsets(tp, timeout=10)
            return int(high)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            code = error.code() if isinstance(error, KafkaError) else None
            if code not in _NO_LEADER_YET or time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


class ConsumerThread:
    """Runs one consumer; created and set up by :meth:`open`, driven by :meth:`run`."""

    def __init__(
        self,
        config: Mapping[str, Any],
        topics: list[str],
        *,
        tracker: OffsetTracker,
        notify: Callable[[], None],
        name: str,
        buffer: int = 1,
        revoke_timeout: float,
        manual_latest: bool = False,
        gate: Gate | None = None,
        commits: bool = True,
    ) -> None:
        self._errors = ErrorLog("consumer")
        self._config = {
            **config,
            "error_cb": self._errors,
            "on_commit": self._on_commit,
            "logger": LibrdkafkaLog("consumer"),
        }
        self._topics = topics
        self._tracker = tracker
        self._notify = notify
        self._buffer = max(1, min(buffer, _MAX_BATCH))
        self._name = name
        self._revoke_timeout = revoke_timeout
        self._manual = manual_latest
        # No commits of its own: a broadcast subscription (it starts at the log end), or a
        # transactional one (its transactions commit its offsets; see transactions.py).
        self._commits = commits and not manual_latest
        # A transactional subscription reads its group metadata after every poll (below).
        self._tracks_metadata = not commits and not manual_latest
        self._gate = gate
        self._consumer: Any = None
        self._thread: threading.Thread | None = None
        self.wake = threading.Event()
        self.wants_wake = False
        self.done = threading.Event()
        self._stopping = False
        self._closing = False
        # Read, not yet taken by the loop: appended here, taken by the loop (``take``) and
        # filtered at a revocation, those two under the tracker's lock.
        self._ready: deque[Any] = deque()
        # Thread-only state below.
        self._assigned: set[TopicPartition] = set()
        self._held: dict[TopicPartition, deque[Any]] = {}
        self._held_until: dict[TopicPartition, float] = {}
        self._paused: set[TopicPartition] = set()
        self._backlog_since: float | None = None
        self._backlog_paused = False
        self._last_commit = 0.0
        self.metadata: Any = None  # consumer group metadata (see group_metadata)

    # -- set-up (blocking: call from a worker thread) --------------------------------------

    def open(self) -> None:
        """Create the consumer and join (or, for broadcast, assign at the log end)."""
        consumer = self._consumer = Consumer(self._config)
        if not self._manual:
            consumer.subscribe(
                self._topics,
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            return
        # A per-instance subscription starts at the current end of the log, resolved *now*:
        # a lazily resolved OFFSET_END would skip what is published before the first fetch.
        assignment = []
        for topic in self._topics:
            metadata = consumer.list_topics(topic=topic, timeout=10)
            for partition in sorted(metadata.topics[topic].partitions):
                high = _log_end(consumer, KafkaTopicPartition(topic, partition))
                assignment.append(KafkaTopicPartition(topic, partition, high))
        consumer.assign(assignment)
        tps = [(tp.topic, tp.partition) for tp in assignment]
        self._tracker.assign(tps)
        self._assigned.update(tps)

    def group_metadata(self) -> Any:
        """The consumer's group metadata (member, generation) as of its latest poll, for a
        transactional offset commit. Read on this thread (``_on_assign``, ``run``): asking
        librdkafka from the event loop blocks it (holding the GIL) while a rebalance waits for
        this very thread, which stalled the whole process for minutes."""
        metadata = self.metadata
        if metadata is None:
            raise RuntimeError("the consumer has no partitions assigned yet")
        return metadata

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=self._name, daemon=True)
        self._thread.start()

    # -- control from the event loop -------------------------------------------------------

    def stop(self) -> None:
        """Hand out nothing more (acknowledgements and commits go on)."""
        self._stopping = True
        self.wake.set()

    def close(self) -> None:
        """Ask the thread to commit, leave the group and exit; ``done`` is set when it has."""
        self._stopping = self._closing = True
        self.wake.set()
        if self._thread is None:  # never started (set-up failed)
            self._shutdown()

    # -- the thread ------------------------------------------------------------------------

    def run(self) -> None:
        try:
            while not self._closing:
                try:
                    self._step()
                    if self._tracks_metadata:
                        # After every poll, on this thread (outside consume, so no rebalance
                        # callback can be waiting for it): a cooperative rebalance bumps the
                        # generation without calling on_assign here, and a transaction that
                        # commits with a stale one fails (ILLEGAL_GENERATION).
                        self.metadata = self._consumer.consumer_group_metadata()
                except Exception:
                    logger.exception("kafka consumer %s: unexpected error; continuing", self._name)
                    time.sleep(0.5)
        finally:
            self._shutdown()

    def _step(self) -> None:
        now = time.monotonic()
        if self._commits and now - self._last_commit >= _COMMIT_EVERY:
            self._last_commit = now
            self._commit(self._tracker.due(), asynchronous=True)
        if self._stopping:
            self._sync_pause()
            self._poll(0, 0.1)  # rebalance callbacks and heartbeats; nothing is handed out
            return
        if self._held:
            self._release_gated(now)
        self.wake.clear()
        ready = self._ready
        if len(ready) >= self._buffer:  # the workers are busy: wait until the loop takes some
            if self._backlog_since is None:
                self._backlog_since = now
            elif not self._backlog_paused and now - self._backlog_since > _BACKLOG_PAUSE_AFTER:
                self._backlog_paused = True
                self._sync_pause()
            if self._backlog_paused:
                self._poll(0, 0)  # keep the group membership alive; paused: returns nothing
            self._notify()
            self.wants_wake = True
            if len(ready) >= self._buffer:  # (taken before the flag was seen: go on)
                self.wake.wait(0.1)
            self.wants_wake = False
            return
        if self._backlog_since is not None:
            self._backlog_since = None
            if self._backlog_paused:
                self._backlog_paused = False
                self._sync_pause()
        timeout = 0.1
        if self._held_until:
            timeout = max(0.0, min(timeout, min(self._held_until.values()) - now))
        self._poll(self._buffer - len(ready), timeout)
        if self._ready:
            self._notify()

    def _poll(self, wanted: int, timeout: float) -> None:
        # consume(n, t) returns only when it has n messages or t has passed, so ask for what is
        # there without waiting first; if that is nothing, wait for one message, then take
        # what came with it: a partial batch is never held back for the whole timeout.
        consume = self._consumer.consume
        wanted = max(1, wanted)
        messages = consume(num_messages=wanted, timeout=0)
        if not messages and timeout > 0:
            messages = consume(num_messages=1, timeout=timeout)
            if messages and wanted > 1:
                messages.extend(consume(num_messages=wanted - 1, timeout=0))
        if not messages:
            return
        if self._gate is None and not self._held:  # the common case, kept short
            if self._all_assigned(messages):
                self._ready.extend(messages)
                return
            assigned = self._assigned
            append = self._ready.append
            for message in messages:
                if message.error() is None:
                    if (message.topic(), message.partition()) in assigned:
                        append(message)
                else:
                    self._log_error(message.error())
            return
        for message in messages:
            error = message.error()
            if error is None:
                self._accept(message)
            else:
                self._log_error(error)

    def _all_assigned(self, messages: list[Any]) -> bool:
        """True when every one of ``messages`` is a record (no error) of a partition assigned
        here: the common case, told in C (``map`` over the messages' methods, two small sets)
        instead of a Python step per message. False means "look at each"."""
        if any(map(_ERROR, messages)):
            return False
        topics = set(map(_TOPIC, messages))
        if len(topics) != 1:
            return False  # (a subscription of several topics: each is looked at)
        [topic] = topics
        assigned = self._assigned
        return all((topic, partition) in assigned for partition in set(map(_PARTITION, messages)))

    def _log_error(self, error: Any) -> None:
        if error.code() in AUTHORIZATION_CODES:  # ACLs changed under a running consumer
            self._errors(error)  # logged once, at ERROR
        elif error.code() != KafkaError._PARTITION_EOF:
            level = logging.ERROR if error.fatal() else logging.DEBUG
            logger.log(level, "kafka consumer %s: %s", self._name, error.str())

    def _accept(self, message: Any) -> None:
        tp = (message.topic(), message.partition())
        if tp not in self._assigned:
            return
        held = self._held.get(tp)
        if held is not None:
            held.append(message)
            return
        gate = self._gate
        if gate is not None:
            wait = gate(message)
            if wait > 0:
                self._held[tp] = deque([message])
                self._held_until[tp] = time.monotonic() + wait
                self._sync_pause()
                return
        self._ready.append(message)

    def _release_gated(self, now: float) -> None:
        gate = self._gate
        assert gate is not None
        changed = False
        for tp in [tp for tp, until in self._held_until.items() if until <= now]:
            held = self._held[tp]
            while held:
                wait = gate(held[0])
                if wait > 0:
                    self._held_until[tp] = now + wait
                    break
                self._ready.append(held.popleft())
            if not held:
                del self._held[tp], self._held_until[tp]
                changed = True
        if changed:
            self._sync_pause()

    def has_ready(self) -> bool:
        return bool(self._ready)

    def take(self, room: int, deliveries: HandsOut[T]) -> list[T]:
        """Called by the event loop: up to ``room`` read messages, as ``deliveries`` hands them
        out (:meth:`.offsets.OffsetTracker.handed_locked`), registered as handed out (in offset
        order within a partition)."""
        ready = self._ready
        if not ready or room <= 0:
            return []
        tracker = self._tracker
        with tracker.lock:  # against _forget: a revoked partition's messages never leave
            # popleft only (the thread appends meanwhile, on the other end)
            messages = list(map(_popleft, repeat(ready, min(room, len(ready)))))
            batch = tracker.handed_locked(messages, deliveries)
        if self.wants_wake:
            self.wants_wake = False
            self.wake.set()
        return batch

    def _sync_pause(self) -> None:
        if self._stopping or self._backlog_paused:
            wanted = set(self._assigned)
        else:
            wanted = set(self._held) & self._assigned
        pause = wanted - self._paused
        resume = (self._paused - wanted) & self._assigned
        try:
            if pause:
                self._consumer.pause([KafkaTopicPartition(t, p) for t, p in pause])
            if resume:
                self._consumer.resume([KafkaTopicPartition(t, p) for t, p in resume])
        except KafkaException as exc:
            logger.debug("kafka consumer %s: pause/resume: %s", self._name, exc)
        self._paused = wanted

    def _commit(self, commits: list[tuple[TopicPartition, int]], *, asynchronous: bool) -> None:
        if not commits:
            return
        offsets = [KafkaTopicPartition(t, p, offset) for (t, p), offset in commits]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=asynchronous)
        except KafkaException as exc:
            logger.warning("kafka consumer %s: commit failed: %s", self._name, exc)
            for tp, offset in commits:
                self._tracker.commit_failed(tp, offset)

    def _on_commit(self, error: Any, partitions: list[Any]) -> None:
        for partition in partitions:
            failed = error is not None or partition.error is not None
            if failed and partition.offset != OFFSET_INVALID:
                self._tracker.commit_failed(
                    (partition.topic, partition.partition), partition.offset
                )
        if error is not None and error.code() != KafkaError._NO_OFFSET:
            logger.debug("kafka consumer %s: commit failed: %s", self._name, error.str())

    # -- rebalance callbacks (run inside consume(), on this thread) -------------------------

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self._tracker.assign(tps)
        self._assigned.update(tps)
        self.metadata = consumer.consumer_group_metadata()  # this assignment's generation
        logger.debug("kafka consumer %s: assigned %s", self._name, tps)

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self._forget(tps)
        states = self._tracker.begin_revoke(tps)
        deadline = time.monotonic() + self._revoke_timeout
        while not self._closing and self._tracker.in_flight(states) and time.monotonic() < deadline:
            time.sleep(0.005)
        left = self._tracker.in_flight(states)
        if left and not self._closing:
            logger.warning(
                "kafka consumer %s: %d delivery(ies) still running after %.3gs at a rebalance; "
                "their partitions move on (they will be redelivered)",
                self._name,
                left,
                self._revoke_timeout,
            )
        commits = self._tracker.release(tps)
        if self._commits:
            self._commit(commits, asynchronous=False)
        logger.debug("kafka consumer %s: revoked %s", self._name, tps)

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self._forget(tps)
        self._tracker.begin_revoke(tps)
        self._tracker.release(tps)
        logger.warning("kafka consumer %s: lost partitions %s", self._name, tps)

    def _forget(self, tps: list[TopicPartition]) -> None:
        gone = set(tps)
        self._assigned -= gone
        paused = self._paused & gone
        if paused and self._consumer is not None:
            # librdkafka keeps a partition's pause across rebalances: one revoked or lost while
            # paused here would stay paused when assigned again, and never be read (its pause
            # forgotten below). So give it back unpaused.
            try:
                self._consumer.resume([KafkaTopicPartition(t, p) for t, p in paused])
            except KafkaException as exc:
                logger.debug("kafka consumer %s: resume at a rebalance: %s", self._name, exc)
        self._paused -= gone
        for tp in gone:
            self._held.pop(tp, None)
            self._held_until.pop(tp, None)
        ready = self._ready
        if ready:
            with self._tracker.lock:
                kept = [m for m in ready if (m.topic(), m.partition()) not in gone]
                ready.clear()
                ready.extend(kept)

    # -- shutdown --------------------------------------------------------------------------

    def _shutdown(self) -> None:
        consumer = self._consumer
        try:
            if consumer is not None:
                final = self._tracker.release(self._tracker.assigned())
                if self._commits:
                    self._commit(final, asynchronous=False)
                consumer.close()
        except Exception as exc:
            logger.warning("kafka consumer %s: close: %s", self._name, exc)
        finally:
            self._consumer = None
            self.done.set()
