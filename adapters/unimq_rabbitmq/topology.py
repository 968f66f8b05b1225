"""RabbitMQ topology: what unimq declares, and the names it uses.

- ``unimq`` (direct exchange, durable): every topic; routing key = the topic name.
- Queue type: every durable queue below is of the ``queue_type`` option's type, ``quorum`` by
  default (replicated, and dead-lettering at least once) or ``classic``.
- ``<topic>::<group>`` (queue): one per consumer group, bound to ``unimq`` with the topic as
  key. Durable; ``x-single-active-consumer`` for ordered subscribers (one consumer at a time
  sees the queue, so its order is the handling order, on both queue types); for broadcast
  subscribers (group names carry the instance id) exclusive, auto-deleted and always classic
  (quorum queues cannot be exclusive, and a per-instance queue has nothing to replicate).
- ``<topic>`` (queue): a holding queue for dead-letter topics, so dead letters wait for
  whoever inspects them even when no group consumes the DLQ topic.
- The delay ladder, for delays with no broker plugin (Debian's RabbitMQ has none), after the
  binary scheme NServiceBus uses: ``LEVELS`` topic exchanges ``unimq.delay.L<k>`` and queues
  ``unimq.delay.L<k>`` with a fixed TTL of ``2**k`` seconds. A delayed message's routing key is
  its delay in seconds as ``LEVELS`` binary digits, most significant first, followed by the
  topic. Level ``k`` sends a message whose bit ``k`` is 1 through its queue (waits ``2**k`` s,
  then dead-letters to level ``k-1``) and one whose bit is 0 straight to level ``k-1``. Level 0
  hands over to ``unimq.delay.deliver``, where every group queue is bound with ``LEVELS``
  wildcard words plus its topic. Each queue holds messages of one TTL only, so they expire in
  order, and any delay up to ``2**LEVELS - 1`` seconds (48 days) costs at most ``LEVELS`` hops.
  On quorum queues the hops use at-least-once dead-lettering (``x-dead-letter-strategy``,
  which needs ``x-overflow=reject-publish``): a message leaves a level only once the next one
  has confirmed it, so a node crash mid-hop cannot lose a delay or a retry (it may repeat one,
  which idempotent handling absorbs). Classic queues dead-letter at most once.

A queue's type and arguments cannot change in place: an existing queue of the other type is a
:class:`ConfigurationError` naming the queue and what to do (:mod:`.queue_types`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractQueue

from unimq.errors import ConfigurationError, NotConnectedError

from .queue_types import QueueType, base_arguments, declare_queue

logger = logging.getLogger("unimq.rabbitmq")

MAIN_EXCHANGE = "unimq"
DELIVER_EXCHANGE = "unimq.delay.deliver"
LEVELS = 22
MAX_DELAY_SECONDS = 2**LEVELS - 1
_FORBIDDEN = set("*# \t\r\n")


def level_name(level: int) -> str:
    return f"unimq.delay.L{level}"


def group_queue(topic: str, group: str) -> str:
    return f"{topic}::{group}"


def check_name(kind: str, name: str) -> None:
    if any(ch in _FORBIDDEN for ch in name) or "::" in name:
        raise ConfigurationError(
            f"{kind} {name!r} cannot be used on RabbitMQ: names must not contain '*', '#', "
            "'::' or whitespace"
        )
    if len(name.encode()) > 200:
        raise ConfigurationError(f"{kind} {name!r} is too long for RabbitMQ (200 bytes at most)")


def delay_routing_key(seconds: int, topic: str) -> str:
    """The ladder's routing key: ``seconds`` in ``LEVELS`` binary words, then the topic."""
    bits = format(seconds, f"0{LEVELS}b")
    return ".".join(bits) + "." + topic


def deliver_binding(topic: str) -> str:
    return "*." * LEVELS + topic


async def declare_exchanges(
    channel: AbstractChannel,
    queue_type: QueueType = "quorum",
    connection: AbstractConnection | None = None,
) -> AbstractExchange:
    """Declare the main exchange and the delay ladder (idempotent). Returns the main exchange.

    Raises :class:`ConfigurationError` when a ladder queue exists with another type."""
    main = await channel.declare_exchange(MAIN_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True)
    deliver = await channel.declare_exchange(
        DELIVER_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
    )
    levels = await asyncio.gather(
        *(
            channel.declare_exchange(level_name(k), aio_pika.ExchangeType.TOPIC, durable=True)
            for k in range(LEVELS)
        )
    )
    results = await asyncio.gather(
        *(
            _declare_level(channel, k, levels, deliver, queue_type, connection)
            for k in range(LEVELS)
        ),
        return_exceptions=True,
    )
    # One refused declare closes the channel, so the others fail too, with less to say.
    failures = [r for r in results if isinstance(r, BaseException)]
    for failure in failures:
        if isinstance(failure, ConfigurationError):
            raise failure
    if failures:
        raise failures[0]
    return main


async def _declare_level(
    channel: AbstractChannel,
    level: int,
    levels: list[AbstractExchange],
    deliver: AbstractExchange,
    queue_type: QueueType,
    connection: AbstractConnection | None,
) -> None:
    exchange = levels[level]
    downstream = levels[level - 1] if level > 0 else deliver
    prefix = "*." * (LEVELS - 1 - level)
    queue = await declare_queue(
        channel,
        level_name(level),
        queue_type,
        lambda kind: ladder_arguments(level, downstream.name, kind),
        connection=connection,
    )
    await queue.bind(exchange, routing_key=f"{prefix}1.#")
    await downstream.bind(exchange, routing_key=f"{prefix}0.#")


def ladder_arguments(level: int, downstream: str, queue_type: QueueType) -> dict[str, Any]:
    """A ladder queue's arguments: its TTL, where it dead-letters to, and on quorum queues the
    at-least-once strategy (which RabbitMQ accepts only with ``reject-publish`` overflow)."""
    arguments: dict[str, Any] = {
        **base_arguments(queue_type),
        "x-message-ttl": (2**level) * 1000,
        "x-dead-letter-exchange": downstream,
    }
    if queue_type == "quorum":
        arguments["x-dead-letter-strategy"] = "at-least-once"
        arguments["x-overflow"] = "reject-publish"
    return arguments


async def declare_group_queue(
    channel: AbstractChannel,
    topic: str,
    group: str,
    *,
    ordered: bool,
    broadcast: bool,
    queue_type: QueueType = "quorum",
    connection: AbstractConnection | None = None,
) -> AbstractQueue:
    def arguments(kind: QueueType) -> dict[str, Any]:
        # No x-queue-type on an exclusive queue: classic anyway, declared as it always was.
        declared = {} if broadcast else base_arguments(kind)
        # One consumer at a time: on quorum and classic queues alike. A stream refuses the
        # argument (AMQP 0.9.1 has no single active consumer on streams): one consumer per
        # stream group at a time always, by a lock of unimq's own (.stream_lock).
        if ordered and kind != "stream":
            declared["x-single-active-consumer"] = True
        return declared

    # Broadcast queues are exclusive to one connection: classic, as quorum queues cannot be.
    kind: QueueType = "classic" if broadcast else queue_type
    name = group_queue(topic, group)
    queue = await declare_queue(
        channel, name, kind, arguments, exclusive=broadcast, connection=connection
    )
    await bind_topic(channel, queue, topic)
    return queue


async def declare_holding_queue(
    channel: AbstractChannel,
    topic: str,
    queue_type: QueueType = "quorum",
    connection: AbstractConnection | None = None,
) -> AbstractQueue:
    queue = await declare_queue(channel, topic, queue_type, base_arguments, connection=connection)
    await bind_topic(channel, queue, topic)
    return queue


async def bind_topic(channel: AbstractChannel, queue: AbstractQueue, topic: str) -> None:
    await queue.bind(MAIN_EXCHANGE, routing_key=topic)
    await queue.bind(DELIVER_EXCHANGE, routing_key=deliver_binding(topic))


async def plain_channel(connection: AbstractConnection, wait: float) -> AbstractChannel:
    """A channel that the robust connection does not restore: for passive declares (RabbitMQ
    answers an unknown queue by closing the channel) and for dead-letter sessions (after a
    reconnect, their unacked messages are back in the queue and the session must not go on).

    Waits up to ``wait`` seconds for a lost connection to come back."""
    try:
        await asyncio.wait_for(connection.ready(), wait)
        channel = aio_pika.Channel(connection, publisher_confirms=False)
        await channel.initialize()
    except (asyncio.TimeoutError, aiormq.exceptions.ChannelInvalidStateError) as exc:
        raise NotConnectedError(
            f"RabbitMQ is unreachable (no connection within {wait:g}s): {exc!r}"
        ) from None
    return channel


async def close_quietly(channel: AbstractChannel) -> None:
    try:
        await channel.close()
    except Exception as exc:  # already closed by the broker, or the connection is gone
        logger.debug("closing channel %s: %s", channel, exc)


async def ready_count(connection: AbstractConnection, queue: str, wait: float) -> int | None:
    """Ready (not unacked) messages in ``queue``, by a passive declare on a throwaway channel;
    ``None`` when the queue does not exist."""
    channel = await plain_channel(connection, wait)
    try:
        declared = await channel.declare_queue(queue, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return None
    finally:
        await close_quietly(channel)
    return declared.declaration_result.message_count or 0
