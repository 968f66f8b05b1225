"""``unimq dlq`` on RabbitMQ: one pass over a dead-letter topic's holding queue.

``RabbitMQTransport.declare_topic`` gives every dead-letter topic a durable holding queue named
after the topic. A session reads it with ``basic.get`` (manual ack) on a channel of its own:

- every message handed out stays unacked on that channel, so the next ``basic.get`` moves on
  to the following one and the pass walks the queue once (``basic.qos`` does not limit
  ``basic.get``: the channel holds as many unacked messages as the session handed out);
- :meth:`HeldDelivery.ack` acks one message, which removes it from the queue for good;
- :meth:`RabbitMQDeadLetters.close` closes the channel: RabbitMQ requeues every message it
  holds unacked at its original place, before it confirms the close. A crash or a lost
  connection does the same, so nothing is ever lost.

The pass covers the messages that were ready when the session opened; later arrivals (such as
a replayed message that failed again) wait for the next session. The channel is not one the
robust connection restores: after a reconnect the session's messages are back in the queue,
and going on would hand them out twice.
"""

from __future__ import annotations

import asyncio
import logging

import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue

from unimq.errors import NotConnectedError

from . import topology
from .transport import RabbitMQDelivery

logger = logging.getLogger("unimq.rabbitmq")

#: Seconds a ``basic.get`` may take before the session gives up on the broker.
GET_TIMEOUT = 30.0

#: Seconds :meth:`RabbitMQDeadLetters.close` waits to see its messages back in the queue.
RETURN_WAIT = 5.0


class HeldDelivery(RabbitMQDelivery):
    """A dead letter handed out by :class:`RabbitMQDeadLetters`; ``ack`` removes it."""

    __slots__ = ("_message", "_session")

    def __init__(
        self, message: AbstractIncomingMessage, topic: str, session: RabbitMQDeadLetters
    ) -> None:
        super().__init__(message.body, message.properties, topic, None, None)
        self._message = message
        self._session = session

    async def ack(self) -> None:
        if self._message.processed:
            return
        if self._session._channel is None:
            logger.warning(
                "ack of %s after its dead-letter session closed: it stays in %s",
                self.native_id,
                self.topic,
            )
            return
        try:
            await self._message.ack()
        except Exception as exc:  # the channel is gone: the message stays in the queue
            logger.warning("ack of %s failed (%s); it stays in %s", self.native_id, exc, self.topic)
        if self._message.processed:
            self._session._held -= 1


class RabbitMQDeadLetters:
    """A :class:`unimq.transport.DeadLetterSession` over the holding queue of ``topic``."""

    def __init__(
        self,
        connection: AbstractConnection,
        topic: str,
        channel: AbstractChannel | None,
        queue: AbstractQueue | None,
        wait: float,
    ) -> None:
        self._connection = connection
        self._wait = wait
        self._topic = topic
        self._channel = channel
        self._queue = queue
        # The messages ready at open: the pass ends there (basic.get would also return later
        # arrivals, and a replay whose message fails again would then never end).
        self._remaining = (queue.declaration_result.message_count or 0) if queue else 0
        self._held = 0  # handed out and not acked

    @classmethod
    async def open(
        cls, connection: AbstractConnection, topic: str, wait: float
    ) -> RabbitMQDeadLetters:
        """A session; an empty one when the topic has no holding queue (nothing was declared,
        and inspecting must not declare anything). ``wait``: how long to wait for a lost
        connection to come back."""
        channel = await topology.plain_channel(connection, wait)
        try:
            queue = await channel.declare_queue(topic, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            await topology.close_quietly(channel)
            return cls(connection, topic, None, None, wait)
        except BaseException:
            await topology.close_quietly(channel)
            raise
        return cls(connection, topic, channel, queue, wait)

    async def count(self) -> int:
        """Ready messages in the holding queue plus those this session holds; messages other
        sessions hold (unacked on their channels) are not counted."""
        ready = await topology.ready_count(self._connection, self._topic, self._wait)
        return (ready or 0) + self._held

    async def next(self) -> HeldDelivery | None:
        queue = self._queue
        if queue is None or self._remaining <= 0:
            return None
        self._remaining -= 1
        try:
            message = await queue.get(no_ack=False, fail=False, timeout=GET_TIMEOUT)
        except (
            aiormq.exceptions.AMQPError,
            aiormq.exceptions.ChannelInvalidStateError,
            asyncio.TimeoutError,
            OSError,
        ) as exc:
            await self.close()
            raise NotConnectedError(
                f"the dead-letter session on {self._topic!r} lost its RabbitMQ channel ({exc!r}); "
                "the messages it had not acked are back in the queue"
            ) from None
        if message is None:  # fewer than at open: another session holds some, or they were acked
            self._remaining = 0
            return None
        self._held += 1
        return HeldDelivery(message, self._topic, self)

    async def close(self) -> None:
        """Give back every message not acked, in its original place (idempotent).

        A classic queue has them back before RabbitMQ confirms the channel's close; a quorum
        queue takes them back a moment later (the return goes through its Raft log), so a
        ``count`` right after would miss them: wait, briefly, until they are ready again."""
        channel, self._channel, self._queue = self._channel, None, None
        self._remaining = 0
        held, self._held = self._held, 0
        if channel is None:
            return
        expected = None
        if held:
            try:
                expected = held + (await self._ready() or 0)
            except NotConnectedError:
                expected = None  # the channel is gone too: its messages are back already
        await topology.close_quietly(channel)
        if expected is not None:
            await self._returned(expected)

    async def _ready(self) -> int | None:
        return await topology.ready_count(self._connection, self._topic, self._wait)

    async def _returned(self, expected: int) -> None:
        deadline = asyncio.get_running_loop().time() + RETURN_WAIT
        while asyncio.get_running_loop().time() < deadline:
            try:
                if (await self._ready() or 0) >= expected:
                    return
            except NotConnectedError:
                return
            await asyncio.sleep(0.05)
        logger.debug("%s: the session's messages are not all ready again yet", self._topic)
