"""Dead-letter sessions (``unimq dlq``) on RocketMQ: a pop consumer group of its own.

A dead-letter topic is an ordinary topic. Browsing it goes through the consumer group
``unimq-dlq`` (:data:`GROUP`, the same for every dead-letter topic), with the proxy's
SimpleConsumer:

- ``next()`` receives letters with a long invisible duration (:data:`HOLD`), so other
  sessions do not see them meanwhile; ``ack()`` acks one (gone for that group, for good);
- ``close()`` gives back every letter received and not acked (``ChangeInvisibleDuration(0)``,
  the smallest the proxy accepts). The broker's revive service re-puts such a letter on the
  group's pop retry topic (~2.5 s measured), where the next session receives it. ``close()``
  waits (at most :data:`SETTLE` seconds) until the broker counts the letters given back
  again, so a ``count()`` right after a ``list`` sees them, in this process or another one.
  A crashed session's letters come back by themselves after :data:`HOLD`.
- ``count()`` is the group's backlog on the topic and its pop retry topics (see ``admin``),
  plus what this session holds. Letters held by *other* open sessions (or a crashed one,
  for up to :data:`HOLD`) are not counted.

What has to be true for a pass to see every letter:

- the group reads each queue from its first message, even for letters written before the
  group first received anything: a pop consumer without an offset starts at the *last*
  message of a queue (unless the first is still in memory). So the transport sets the
  group's unset offsets to the earliest ones (``RemotingAdmin.start_at_earliest``) when
  ``declare_topic`` is called for the topic (a subscriber starts), and again when a session
  opens;
- a letter given back many times must stay: the proxy moves a message whose delivery attempt
  exceeds the group's ``retryMaxTimes`` to ``%DLQ%unimq-dlq``, and every pass that looks at a
  letter without acking it is an attempt. ``auto_provision`` creates the group with
  ``retryMaxTimes`` :data:`GROUP_RETRY_MAX_TIMES`; create it so by hand otherwise.

Letters dead-lettered after the session opened (born more than :data:`SKEW_MS` later) are
held back and given back at close, and a session hands out at most as many letters as the
topic held when it opened: a replay whose copies fail straight into the topic again cannot
loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from unimq.errors import ConnectionFailedError

from . import codec, remoting
from .admin import RemotingAdmin
from .consumer import ack_message, change_invisible, is_transient

logger = logging.getLogger("unimq.rocketmq")

#: The consumer group that browses dead-letter topics (unimq name; ``names.group_name`` keeps
#: it as it is).
GROUP = "unimq-dlq"
#: ``retryMaxTimes`` of :data:`GROUP` when the adapter provisions it.
GROUP_RETRY_MAX_TIMES = 1_000_000
#: Seconds a received letter stays invisible to other sessions until acked or given back.
HOLD = 600
#: Seconds ``next()`` keeps asking while the broker still reports letters that do not come
#: (one receive may add the proxy's long-polling time, 5 s, to it).
WAIT = 5.0
#: Seconds ``close()`` waits for the letters it gave back to be counted again.
SETTLE = 30.0
#: Letters received per call (never more than the session may still hand out).
BATCH = 16
#: Letters born this long after the session opened are not part of its pass (clock skew
#: between the hosts that dead-letter and the one that browses).
SKEW_MS = 2000


class RocketMQDeadLetter(codec.Received):
    """A dead letter handed out by a session; ``ack`` removes it from the topic for good."""

    __slots__ = ("_session", "_settled")

    def __init__(self, message: Any, session: RocketMQDeadLetters) -> None:
        super().__init__(message)
        self._session = session
        self._settled = False

    @property
    def topic(self) -> str:
        return self._session.topic

    async def ack(self) -> None:
        if self._settled:
            return
        self._settled = True
        await self._session.ack(self, self._message)


class RocketMQDeadLetters:
    """One pass over dead-letter ``topic`` (see the module docstring).

    ``group`` and ``physical_topic`` are the brokers' names (namespaced); ``start`` starts a
    SimpleConsumer of the group on the topic (blocking; called in a worker thread, once, on
    the first ``next()``).
    """

    def __init__(
        self,
        topic: str,
        *,
        physical_topic: str,
        group: str,
        admin: RemotingAdmin,
        start: Callable[[], Any],
    ) -> None:
        self.topic = topic
        self._physical_topic = physical_topic
        self._group = group
        self._admin = admin
        self._start = start
        self._opened_ms = time.time() * 1000
        self._total: int | None = None
        self._handed = 0
        self._consumer: Any = None
        self._buffer: deque[Any] = deque()  # received, not handed out yet
        self._unsettled: set[RocketMQDeadLetter] = set()
        self._later: list[Any] = []  # received, born after the session opened
        self._receiving: asyncio.Future[Any] | None = None
        self._closed = False

    # -- counting ----------------------------------------------------------------------------

    async def _backlog(self) -> int:
        try:
            backlog = await self._admin.backlog(self._group, self._physical_topic)
        except remoting.RemotingError as exc:
            raise ConnectionFailedError(
                f"cannot count the dead letters of {self.topic!r} (RocketMQ topic "
                f"{self._physical_topic!r}): {exc}"
            ) from None
        return backlog or 0

    async def _backlog_or_none(self) -> int | None:
        try:
            return await self._backlog()
        except ConnectionFailedError as exc:
            logger.debug("%s", exc)
            return None

    def _holding(self) -> int:
        return len(self._buffer) + len(self._unsettled) + len(self._later)

    async def count(self) -> int:
        backlog = await self._backlog()
        if self._total is None:
            self._total = backlog
        return backlog + self._holding()

    # -- the pass ----------------------------------------------------------------------------

    async def next(self) -> RocketMQDeadLetter | None:
        if self._closed:
            return None
        if self._total is None:
            self._total = await self._backlog_or_none()
        if self._total == 0:
            return None
        consumer = await self._consumer_started()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while True:
            total = self._total
            if total is not None and self._handed >= total:
                return None
            while self._buffer:
                message = self._buffer.popleft()
                if (message.born_timestamp or 0) > self._opened_ms + SKEW_MS:
                    self._later.append(message)
                    continue
                letter = RocketMQDeadLetter(message, self)
                self._handed += 1
                self._unsettled.add(letter)
                return letter
            if loop.time() >= deadline:
                return None
            wanted = BATCH if total is None else max(1, min(BATCH, total - self._handed))
            received = await self._receive(consumer, wanted)
            if received is None:
                await asyncio.sleep(0.2)
            elif received:
                self._buffer.extend(received)
            elif await self._backlog_or_none() == 0:
                return None

    async def _consumer_started(self) -> Any:
        if self._consumer is None:
            try:
                self._consumer = await asyncio.to_thread(self._start)
            except Exception as exc:
                raise ConnectionFailedError(
                    f"cannot read the dead letters of {self.topic!r} (RocketMQ topic "
                    f"{self._physical_topic!r}, group {self._group!r}): "
                    f"{type(exc).__name__}: {exc}"
                ) from None
        return self._consumer

    async def _receive(self, consumer: Any, wanted: int) -> list[Any] | None:
        """Up to ``wanted`` letters (``[]``: none within the proxy's long polling); ``None``
        after a failure worth retrying (the client's settings not synced yet, a timeout)."""
        # Shielded: a caller cancelled meanwhile must not lose what the broker already handed
        # out (invisible for HOLD); close() waits for it and gives it back.
        receiving = asyncio.wrap_future(consumer.receive_async(wanted, HOLD))
        self._receiving = receiving
        try:
            messages = await asyncio.shield(receiving)
        except Exception as exc:
            self._receiving = None
            if is_transient(exc):
                return None
            raise ConnectionFailedError(
                f"receiving the dead letters of {self.topic!r} failed: {type(exc).__name__}: {exc}"
            ) from None
        self._receiving = None
        return list(messages or ())

    async def ack(self, letter: RocketMQDeadLetter, message: Any) -> None:
        self._unsettled.discard(letter)
        consumer = self._consumer
        try:
            if consumer is None:
                raise ConnectionFailedError("the session was closed")
            await ack_message(consumer, message)
        except Exception as exc:
            logger.warning(
                "ack of dead letter %s on %r failed (it comes back within %d s): %s",
                letter.native_id,
                self.topic,
                HOLD,
                exc,
            )

    # -- closing -----------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            self._buffer.extend(await self._late_receipt(consumer))
        pending = [*self._buffer, *self._later]
        pending += [letter._message for letter in self._unsettled]
        self._buffer.clear()
        self._later.clear()
        self._unsettled.clear()
        if consumer is None:
            return
        try:
            if pending:
                await self._give_back(consumer, pending)
        finally:
            await asyncio.to_thread(_shutdown_quietly, consumer)

    async def _late_receipt(self, consumer: Any) -> list[Any]:
        """What a receive still under way (its caller was cancelled) brings."""
        receiving, self._receiving = self._receiving, None
        if receiving is None:
            return []
        limit = float(getattr(consumer, "await_duration", None) or 5)
        limit += float(getattr(consumer.client_configuration, "request_timeout", None) or 5)
        try:
            return list(await asyncio.wait_for(asyncio.shield(receiving), limit) or ())
        except Exception:
            return []  # failed or nothing (or lost until HOLD: the call hangs)

    async def _give_back(self, consumer: Any, messages: list[Any]) -> None:
        before = await self._backlog_or_none()
        results = await asyncio.gather(
            *(change_invisible(consumer, message, 0) for message in messages),
            return_exceptions=True,
        )
        given = 0
        for message, result in zip(messages, results, strict=True):
            if isinstance(result, BaseException):
                logger.warning(
                    "could not give back dead letter %s of %r (it comes back within %d s): %s",
                    message.message_id,
                    self.topic,
                    HOLD,
                    result,
                )
            else:
                given += 1
        if before is None or not given:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE
        while loop.time() < deadline:
            await asyncio.sleep(0.25)
            now = await self._backlog_or_none()
            if now is not None and now >= before + given:
                return
        logger.info(
            "%d dead letters of %r were given back but the broker did not count them again "
            "within %.0f s (its revive service is slow): a count may miss them for a while",
            given,
            self.topic,
            SETTLE,
        )


def _shutdown_quietly(consumer: Any) -> None:
    try:
        consumer.shutdown()
    except Exception as exc:
        logger.debug("dead-letter consumer shutdown: %s", exc)
