"""Where a stream group stands: its committed offset, kept by unimq, and the lock that lets one
consumer of the group read at a time.

Why unimq keeps the offset itself: a RabbitMQ stream read over AMQP 0.9.1 is a log, not a
queue. An ack is only flow-control credit; the broker forgets nothing and remembers no
position. Server-side offset tracking exists only in the stream protocol (port 5552, the
``rabbitmq_stream`` plugin, the ``rstream`` client), which a stock broker does not enable and
which would need a second port, URL and TLS set-up. So the offset lives where AMQP can reach it:

- ``<topic>::<group>::offset``: a quorum queue of length one (``x-max-length=1``, drop-head):
  its one message is the offset the group reads next (decimal text). A commit publishes the
  new offset (confirmed); the older message is dropped by the queue. Reading it is a
  ``basic.get`` and a requeue.
- ``<topic>::<group>::active``: an exclusive queue, held by the connection of the one
  consumer reading the group. RabbitMQ refuses an exclusive queue that another connection
  holds (``RESOURCE_LOCKED``) and deletes it when that connection dies, so this is a lease
  that needs no clock: the other instances of the group wait as standbys and one of them takes
  over when it goes. A stream has no single active consumer over AMQP 0.9.1 (it refuses
  ``x-single-active-consumer``), and without this lock every instance would read every
  message.

Names with a second ``::`` cannot clash with any group queue: topic and group names may not
contain ``::``.
"""

from __future__ import annotations

import logging
import weakref
from collections import deque
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection

from .queue_types import DELIVERY_LIMIT
from .topology import close_quietly

logger = logging.getLogger("unimq.rabbitmq")


def offset_queue(stream: str) -> str:
    return f"{stream}::offset"


def lock_queue(stream: str) -> str:
    return f"{stream}::active"


#: The offset queue's arguments (declared by every reader and by ``rewind`` alike).
OFFSET_ARGUMENTS: dict[str, Any] = {
    "x-queue-type": "quorum",
    "x-delivery-limit": DELIVERY_LIMIT,  # every read returns the message: never drop it
    "x-max-length": 1,  # the newest commit drops the older one (overflow: drop-head)
}


class Positions:
    """The offset a group has settled up to, from acks that come out of order.

    A stream is read in offset order, but handlers finish in any order: the group may only
    commit the offset past which everything was acked. ``delivered`` is told every offset in
    the order the stream delivered them; ``settled`` an acked one. ``next`` is the offset to
    read from after a restart (``None`` before anything was read or committed)."""

    def __init__(self, start: int | None) -> None:
        self.next = start
        self._pending: deque[int] = deque()
        self._done: set[int] = set()

    def delivered(self, offset: int) -> None:
        if not self._pending and (self.next is None or offset < self.next):
            # The first one read (or the stream started before the committed offset: it was
            # deleted and declared again): nothing before it is this group's to read.
            self.next = offset
        self._pending.append(offset)

    def settled(self, offset: int) -> None:
        pending = self._pending
        if offset not in pending or offset in self._done:
            return  # not of this generation (read before a reconnect), or settled already
        self._done.add(offset)
        while pending and pending[0] in self._done:
            first = pending.popleft()
            self._done.discard(first)
            self.next = first + 1


class OffsetStore:
    """The group's committed offset in its offset queue (see the module docstring)."""

    def __init__(self, stream: str) -> None:
        self.name = offset_queue(stream)

    async def declare(self, channel: AbstractChannel) -> None:
        await channel.declare_queue(self.name, durable=True, arguments=OFFSET_ARGUMENTS)

    async def read(self, channel: AbstractChannel) -> int | None:
        """The committed offset; ``None`` when the group never committed one."""
        queue = await channel.declare_queue(self.name, durable=True, arguments=OFFSET_ARGUMENTS)
        message = await queue.get(no_ack=False, fail=False)
        if message is None:
            return None
        try:
            return int(message.body.decode("ascii"))
        except ValueError:
            logger.warning("ignoring offset queue %s: %r is not an offset", self.name, message.body)
            return None
        finally:
            await message.nack(requeue=True)

    async def write(self, channel: AbstractChannel, offset: int) -> None:
        """Commit ``offset``; ``channel`` must have publisher confirms (returns once stored)."""
        await channel.default_exchange.publish(
            aio_pika.Message(str(offset).encode("ascii"), delivery_mode=2),
            routing_key=self.name,
            mandatory=True,
        )


#: The locks each connection of this process holds.
_HELD: weakref.WeakKeyDictionary[AbstractConnection, set[str]] = weakref.WeakKeyDictionary()


class GroupLock:
    """The exclusive queue held by the group's reading consumer (see the module docstring).

    Held on a channel of its own that the robust connection does not restore: after a
    reconnect the lock is gone (RabbitMQ deleted it with the old connection) and must be won
    again, possibly by another instance meanwhile. The same channel publishes the commits, with
    confirms, so a consumer that lost its lock cannot commit over its successor's offsets."""

    def __init__(self, stream: str) -> None:
        self.name = lock_queue(stream)
        self.channel: AbstractChannel | None = None
        self._connection: AbstractConnection | None = None

    async def acquire(self, connection: AbstractConnection) -> bool:
        """Take the lock; ``False`` when another connection holds it, or this one (RabbitMQ
        lets the connection that holds an exclusive queue declare it again)."""
        held = _HELD.setdefault(connection, set())
        if self.name in held:
            return False
        held.add(self.name)  # before the first await: two tasks never both win
        channel = aio_pika.Channel(connection, publisher_confirms=True)
        try:
            await channel.initialize()
            await channel.declare_queue(self.name, exclusive=True, auto_delete=False)
        except aiormq.exceptions.ChannelLockedResource:
            held.discard(self.name)
            await close_quietly(channel)
            return False
        except BaseException:
            held.discard(self.name)
            await close_quietly(channel)
            raise
        self.channel, self._connection = channel, connection
        return True

    @property
    def held(self) -> bool:
        channel = self.channel
        return channel is not None and not channel.is_closed

    async def release(self) -> None:
        channel, self.channel = self.channel, None
        connection, self._connection = self._connection, None
        if connection is not None:
            _HELD.get(connection, set()).discard(self.name)
        if channel is None or channel.is_closed:
            return
        try:
            await channel.queue_delete(self.name)
        except Exception as exc:  # the connection is going: RabbitMQ deletes it with it
            logger.debug("releasing stream lock %s: %s", self.name, exc)
        await close_quietly(channel)
