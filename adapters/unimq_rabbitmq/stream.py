"""``queue_type=stream``: a subscriber group reads a RabbitMQ stream over AMQP 0.9.1.

A stream is an append-only log: the group's queue ``<topic>::<group>`` is declared with
``x-queue-type=stream``, and the consumer attaches at an offset (the ``x-stream-offset``
consumer argument) and needs a prefetch (it has: the subscriber's). What differs from a queue:

- **Acks are credit only.** The broker does not remove or remember anything; the group's
  position is the offset unimq commits (:mod:`.stream_position`): the first offset not yet
  acked, committed every ``COMMIT_INTERVAL`` seconds and when the subscription closes. After a
  crash the group reads again from the last commit (at least once: up to a second of handled
  messages again, and every message after one that was never acked).
- **No redelivery of one message.** Nothing is ever returned to a stream. unimq never relied on
  it: a failed attempt is retried by a copy through the group's retry topic (itself a stream
  group, with its own offset), or in place for ordered subscribers, and dead letters are
  copies to the DLQ topic (its holding queue stays a quorum queue). A delivery held by a
  channel that closed is read again from the committed offset.
- **One reader per group.** Every consumer of a stream reads every message, and AMQP 0.9.1
  has no single active consumer on streams; unimq's group lock (an exclusive queue) lets one
  instance read while the others wait as standbys, checking every ``STANDBY_INTERVAL``
  seconds, and one takes over from the committed offset when the reader's connection goes.
  Scaling a stream group therefore means more ``concurrency`` in one instance, not more
  instances.
- **Rewind.** The offset can be moved back to a time (:mod:`.stream_rewind`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractQueue
from pamqp.commands import Basic

from . import inline
from .acks import AckBatcher
from .stream_position import GroupLock, OffsetStore, Positions
from .transport import RabbitMQDelivery, RabbitMQSubscription

logger = logging.getLogger("unimq.rabbitmq")

#: Seconds between two commits of a group's offset (while it moved).
COMMIT_INTERVAL = 1.0
#: Seconds between two attempts of a standby instance to take the group's lock.
STANDBY_INTERVAL = 1.0

OFFSET_HEADER = "x-stream-offset"


class StreamDelivery(RabbitMQDelivery):
    """A delivery from a stream: its ack also settles its offset for the next commit."""

    __slots__ = ("_offset", "_positions")

    def __init__(
        self,
        body: bytes,
        properties: Basic.Properties,
        topic: str,
        acks: AckBatcher | None,
        delivery_tag: int | None,
        positions: Positions | None,
    ) -> None:
        super().__init__(body, properties, topic, acks, delivery_tag)
        self._offset = stream_offset(properties)
        self._positions = positions

    async def ack(self) -> None:
        await super().ack()
        positions, self._positions = self._positions, None
        if positions is not None and self._offset is not None:
            positions.settled(self._offset)


def stream_offset(properties: Basic.Properties) -> int | None:
    """The offset RabbitMQ stamps on every message it delivers from a stream."""
    value = (properties.headers or {}).get(OFFSET_HEADER)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class StreamSubscription(RabbitMQSubscription):
    """Reads the group's stream from its committed offset, once it holds the group lock."""

    def __init__(
        self,
        channel: AbstractChannel,
        queue: AbstractQueue,
        topic: str,
        prefetch: int,
        connection: AbstractConnection,
    ) -> None:
        super().__init__(channel, queue, topic, prefetch)
        self._connection = connection
        self._lock = GroupLock(queue.name)
        self._store = OffsetStore(queue.name)
        self._positions: Positions | None = None
        self._committed: int | None = None
        self._standby: asyncio.Task[None] | None = None
        self._committer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._take_over_or_wait()
        reopened = getattr(self._channel, "reopen_callbacks", None)
        if reopened is not None:
            reopened.add(self._resume)

    async def _take_over_or_wait(self) -> None:
        if await self._lock.acquire(self._connection):
            try:
                await self._begin()
            except BaseException:
                await self._lock.release()  # let a standby (or a retry) have the group
                raise
            return
        logger.info(
            "stream group %s is read by another instance: this one waits as a standby",
            self._queue.name,
        )
        self._standby = asyncio.create_task(self._wait_for_lock())

    async def _wait_for_lock(self) -> None:
        """A standby: try for the lock every ``STANDBY_INTERVAL`` s until this instance wins
        it (then read) or stops (``stop`` cancels this; ``close`` releases a lock won)."""
        while not self._stopped:
            await asyncio.sleep(STANDBY_INTERVAL)
            try:
                if not await self._lock.acquire(self._connection):
                    continue
            except Exception as exc:  # the connection is down: try again later
                logger.debug("waiting for the lock of %s: %s", self._queue.name, exc)
                continue
            try:
                await self._begin()
            except Exception as exc:  # give the group to another instance, or try again
                logger.error("could not start reading %s: %s", self._queue.name, exc)
                await self._lock.release()
                continue
            logger.info("took over stream group %s", self._queue.name)
            return

    async def _begin(self) -> None:
        """With the lock: read the committed offset and attach there."""
        channel = self._lock.channel
        assert channel is not None
        await self._store.declare(channel)
        self._committed = await self._store.read(channel)
        self._positions = Positions(self._committed)
        await self._consume()
        self._committer = asyncio.create_task(self._commit_every(COMMIT_INTERVAL))

    async def _consume(self) -> None:
        underlay = await self._channel.get_underlay_channel()
        self._acks = AckBatcher(underlay, track=True)
        positions = self._positions
        start = positions.next if positions is not None else None
        tag = await inline.consume(
            underlay,
            self._queue.name,
            self._delivered,
            prefetch=self._prefetch,
            arguments={OFFSET_HEADER: "first" if start is None else start},
        )
        self._underlay, self._consumer_tag = underlay, tag

    async def _resume(self, _channel: Any) -> None:
        """After a reconnect: the lock went with the old connection; win it again (or wait)."""
        if self._stopped or (self._standby is not None and not self._standby.done()):
            return
        await self._stop_committing()
        await self._lock.release()
        try:
            await self._take_over_or_wait()
            logger.info("stream group %s: lock and consumer restored", self._queue.name)
        except Exception as exc:
            logger.error("could not resume reading %s: %s", self._queue.name, exc)

    def _delivered(self, message: aiormq.abc.DeliveredMessage) -> None:
        positions = self._positions
        offset = stream_offset(message.header.properties)
        if positions is not None and offset is not None and message.channel is self._underlay:
            positions.delivered(offset)
        super()._delivered(message)

    def _delivery(self, message: aiormq.abc.DeliveredMessage) -> RabbitMQDelivery:
        return StreamDelivery(
            message.body,
            message.header.properties,
            self._topic,
            self._acks_for(message.channel),
            message.delivery.delivery_tag,  # type: ignore[union-attr]  # always a Deliver here
            self._positions,
        )

    async def _commit_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self._commit()

    async def _commit(self) -> None:
        positions, channel = self._positions, self._lock.channel
        if positions is None or channel is None or not self._lock.held:
            return
        offset = positions.next
        if offset is None or offset == self._committed:
            return
        try:
            await self._store.write(channel, offset)
        except Exception as exc:  # read again from the previous commit: at least once
            logger.warning("could not commit offset %s of %s: %s", offset, self._queue.name, exc)
            return
        self._committed = offset

    async def _stop_committing(self) -> None:
        committer, self._committer = self._committer, None
        if committer is not None:
            committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await committer

    async def stop(self) -> None:
        standby, self._standby = self._standby, None
        if standby is not None:
            standby.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await standby
        await super().stop()

    async def close(self) -> None:
        await self.stop()
        await self._stop_committing()
        await self._commit()  # what the handlers acked up to now
        await super().close()
        await self._lock.release()
