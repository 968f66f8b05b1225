"""Rewinding a stream group, and its lag, from the offsets unimq keeps (:mod:`.stream_position`).

Rewind to a time: the group's new offset is that of the first message published at or after
the time, and it only moves back. RabbitMQ can attach a consumer at a timestamp, but over AMQP
0.9.1 only in whole seconds and only to the start of the stream *chunk* holding it (a chunk is
a batch of messages written together), so it hands out earlier messages too. unimq therefore
reads from there and takes the first message whose ``unimq-published-at`` (milliseconds, the
publisher's clock) is at or after the time; messages of other clients without that header
fall back to the AMQP ``timestamp`` property, and without either count as published at the
time (chunk granularity). The offset found is committed as a plain offset, so the group then
reads from exactly that message, and the count (committed minus new offset) is exact.

Like Kafka, a group that is being read is refused (``ConfigurationError``): the reading
instance keeps its position in memory and would commit over the rewind. The group lock tells:
rewind takes it for the time it writes, so no consumer starts meanwhile. ``dry_run`` only
reads, and runs while the group is read too.

Lag: the stream's message count (``queue.declare``; RabbitMQ refreshes it every few seconds)
plus its first offset (retention may have removed the oldest segments) minus the group's
committed offset. Backlog age: the publish time of the message at the committed offset, read
by a consumer of its own that commits nothing.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection
from pamqp.commands import Basic

from unimq import headers as h
from unimq.errors import ConfigurationError, UnsupportedFeatureError

from .queue_types import base_arguments
from .stream import OFFSET_HEADER, stream_offset
from .stream_position import GroupLock, OffsetStore
from .topology import close_quietly, group_queue, plain_channel

logger = logging.getLogger("unimq.rabbitmq")

#: Messages read ahead while looking for the rewind point (the consumer's prefetch).
_READ_AHEAD = 256


async def rewind(
    connection: AbstractConnection,
    topic: str,
    group: str,
    since: float,
    *,
    dry_run: bool,
    wait: float,
) -> int | None:
    """Move stream group ``group`` of ``topic`` back to ``since``; how many messages it reads
    again. ``None``: the group has no queue. ``wait``: the longest any read may take."""
    stream = group_queue(topic, group)
    store = OffsetStore(stream)
    channel = await plain_channel(connection, wait)
    try:
        if not await _exists(connection, stream, wait):
            return None
        await _check_stream(connection, stream, wait)
        lock = GroupLock(stream)
        if not dry_run and not await lock.acquire(connection):
            raise ConfigurationError(
                f"stream group {group!r} of topic {topic!r} is being read by a running "
                "subscriber, which keeps its position in memory and would commit over the "
                "rewind: stop its subscribers, rewind, then start them again"
            )
        try:
            committed = await store.read(channel)
            if committed is None:
                return 0  # never committed: the group reads from the first message anyway
            target = await _first_since(connection, stream, since, committed, wait)
            if target is None or target >= committed:
                return 0
            if not dry_run:
                assert lock.channel is not None
                await store.write(lock.channel, target)
            return committed - target
        finally:
            await lock.release()
    finally:
        await close_quietly(channel)


async def lag(connection: AbstractConnection, topic: str, group: str, wait: float) -> int | None:
    """Messages of the stream the group has not committed yet; ``None`` without the queue."""
    stream = group_queue(topic, group)
    channel = await plain_channel(connection, wait)
    try:
        try:
            declared = await channel.declare_queue(stream, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None
        count = declared.declaration_result.message_count or 0
        committed = await OffsetStore(stream).read(channel)
    finally:
        await close_quietly(channel)
    if count == 0:
        return 0
    async with _reader(connection, stream, "first", wait) as read:
        first = await read()
    start = stream_offset(first.header.properties) if first is not None else None
    if start is None:
        return count
    position = start if committed is None else max(committed, start)
    return max(0, start + count - position)


async def backlog_age(
    connection: AbstractConnection, topic: str, group: str, wait: float, now: float
) -> float | None:
    """Seconds since the message at the group's committed offset was published (``0.0`` with
    no backlog); ``None`` without the queue, or for a message with no publish time."""
    behind = await lag(connection, topic, group, wait)
    if not behind:
        return None if behind is None else 0.0
    stream = group_queue(topic, group)
    channel = await plain_channel(connection, wait)
    try:
        committed = await OffsetStore(stream).read(channel)
    finally:
        await close_quietly(channel)
    async with _reader(
        connection, stream, "first" if committed is None else committed, wait
    ) as read:
        oldest = await read()
    if oldest is None:
        return 0.0  # read meanwhile (RabbitMQ's count is a few seconds old)
    published = _published(oldest.header.properties)
    return None if published == float("inf") else max(0.0, now - published)


async def _exists(connection: AbstractConnection, stream: str, wait: float) -> bool:
    channel = await plain_channel(connection, wait)
    try:
        await channel.declare_queue(stream, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return False
    finally:
        await close_quietly(channel)
    return True


async def _check_stream(connection: AbstractConnection, stream: str, wait: float) -> None:
    """Refuse a group whose queue is not a stream: a queue deletes what it delivered."""
    channel = await plain_channel(connection, wait)
    try:
        await channel.declare_queue(stream, durable=True, arguments=base_arguments("stream"))
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise UnsupportedFeatureError(
            f"queue {stream!r} is not a stream ({exc.args[0] if exc.args else exc}): a classic "
            "or quorum queue deletes what it delivered, so its group cannot be rewound. Only "
            "groups subscribed with queue_type=stream can"
        ) from None
    finally:
        await close_quietly(channel)


async def _first_since(
    connection: AbstractConnection, stream: str, since: float, committed: int, wait: float
) -> int | None:
    """The offset of the first message published at or after ``since``, if it is before
    ``committed``; ``None`` when there is none before it (nothing to read again)."""
    if committed <= 0:
        return None
    # The last message the group settled: if even it is older, nothing moves back. Checked
    # first because a timestamp after the stream's end attaches at its end, where no message
    # would ever come.
    async with _reader(connection, stream, committed - 1, wait) as read:
        last = await read()
    if last is None:
        return None
    offset = stream_offset(last.header.properties)
    if offset is not None and offset < committed and _published(last.header.properties) < since:
        return None
    attach = datetime.datetime.fromtimestamp(int(since), tz=datetime.timezone.utc)
    async with _reader(connection, stream, attach, wait) as read:
        while True:
            message = await read()
            if message is None:
                return None
            offset = stream_offset(message.header.properties)
            if offset is None or offset >= committed:
                return None
            if _published(message.header.properties) >= since:
                return offset


def _published(properties: Basic.Properties) -> float:
    """When a message was published (epoch seconds): unimq's header, else the AMQP
    timestamp, else ``+inf`` (unknown: counted as published at the rewind time or later)."""
    value = (properties.headers or {}).get(h.PUBLISHED_AT)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    try:
        return int(str(value)) / 1000.0 if value is not None else _timestamp(properties)
    except ValueError:
        return _timestamp(properties)


def _timestamp(properties: Basic.Properties) -> float:
    stamp = properties.timestamp
    if isinstance(stamp, datetime.datetime):
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=datetime.timezone.utc)
        return stamp.timestamp()
    return float("inf")


@asynccontextmanager
async def _reader(
    connection: AbstractConnection,
    stream: str,
    start: int | str | datetime.datetime,
    wait: float,
) -> AsyncIterator[_Read]:
    """A consumer of ``stream`` attached at ``start``, on a channel of its own that is closed
    afterwards (nothing is committed). The callable yields the next message, ``None`` if none
    came within ``wait`` seconds."""
    channel: AbstractChannel = await plain_channel(connection, wait)
    inbox: asyncio.Queue[aiormq.abc.DeliveredMessage] = asyncio.Queue()
    try:
        await channel.set_qos(prefetch_count=_READ_AHEAD)
        underlay = await channel.get_underlay_channel()

        async def deliver(message: aiormq.abc.DeliveredMessage) -> None:
            # Acked when read, not here: an ack written after the channel's close would be
            # a frame on a closed channel, which RabbitMQ answers by closing the connection.
            inbox.put_nowait(message)

        await underlay.basic_consume(
            stream, deliver, no_ack=False, arguments={OFFSET_HEADER: start}
        )
        yield _Read(underlay, inbox, wait)
    finally:
        await close_quietly(channel)


class _Read:
    """The next message of a :func:`_reader`, or ``None`` after ``wait`` seconds of silence."""

    def __init__(
        self,
        channel: aiormq.abc.AbstractChannel,
        inbox: asyncio.Queue[aiormq.abc.DeliveredMessage],
        wait: float,
    ) -> None:
        self._channel = channel
        self._inbox = inbox
        self._wait = wait

    async def __call__(self) -> aiormq.abc.DeliveredMessage | None:
        try:
            message = await asyncio.wait_for(self._inbox.get(), self._wait)
        except asyncio.TimeoutError:
            return None
        # Credit for the next one (a stream consumer stops at its prefetch without acks).
        await self._channel.basic_ack(message.delivery.delivery_tag)  # type: ignore[union-attr,arg-type]
        return message
