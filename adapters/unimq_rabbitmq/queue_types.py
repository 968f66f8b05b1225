"""Queue types (the ``queue_type`` option) and the error for a queue of the other type.

A queue's type and arguments cannot change in place: declaring an existing queue with other
ones makes RabbitMQ close the channel with ``PRECONDITION_FAILED - inequivalent arg ...``,
naming the first argument that differs, which for a queue of the other type is often not
``x-queue-type`` (a classic ladder queue first differs in ``x-overflow``). So
:func:`declare_queue` asks the broker: it re-declares the queue, on a throwaway channel, as the
other type would declare it; if RabbitMQ accepts that, the queue is of the other type, and the
:class:`ConfigurationError` says so, with what to do. Otherwise the error names the argument.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any, Literal

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractQueue

from unimq.errors import ConfigurationError

logger = logging.getLogger("unimq.rabbitmq")

QueueType = Literal["quorum", "classic", "stream"]

#: ``x-delivery-limit`` of every quorum queue: in effect none. RabbitMQ 4.0 gives quorum queues
#: a default limit of 20 returns per message and then drops the message, and it counts the
#: returns of a closed channel (a consumer's prefetched messages at shutdown, every
#: ``unimq dlq`` session over a holding queue): the default would lose messages. 3.10 has no
#: default; the same explicit value on both keeps a queue equivalent across an upgrade.
DELIVERY_LIMIT = 2**31 - 1

#: The arguments unimq declares a queue with, for a given queue type.
Arguments = Callable[[QueueType], dict[str, Any]]

#: RabbitMQ's words, e.g. "inequivalent arg 'x-queue-type' for queue 'q' in vhost '/':
#: received 'quorum' but current is 'classic'"; a value may also read "the value 'quorum' of
#: type 'longstr'" or "none".
_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<arg>[^']+)' for queue '(?P<queue>[^']*)'[^:]*:\s*"
    r"received (?P<received>.+?) but current is (?P<current>.+?)\s*$",
    re.DOTALL,
)
_VALUE = re.compile(r"^(?:the value )?'(?P<value>[^']*)'")


def base_arguments(queue_type: QueueType) -> dict[str, Any]:
    """The arguments of every queue of ``queue_type`` unimq declares. Classic queues get no
    ``x-queue-type``: declared exactly as before the option existed (and see
    docs/backends/rabbitmq.md on a RabbitMQ 4.0.5 boot failure seen with the explicit one)."""
    if queue_type == "quorum":
        return {"x-queue-type": "quorum", "x-delivery-limit": DELIVERY_LIMIT}
    if queue_type == "stream":  # an append-only log: no delivery limit, TTL or dead-lettering
        return {"x-queue-type": "stream"}
    return {}


def other(queue_type: QueueType) -> QueueType:
    """The type :func:`_probe` tries for a queue that cannot be declared as ``queue_type``."""
    return "classic" if queue_type == "quorum" else "quorum"


async def declare_queue(
    channel: AbstractChannel,
    name: str,
    queue_type: QueueType,
    arguments: Arguments,
    *,
    exclusive: bool = False,
    connection: AbstractConnection | None = None,
) -> AbstractQueue:
    """Declare queue ``name`` (durable, or exclusive and auto-deleted) with
    ``arguments(queue_type)``. An existing queue of another type or with other arguments
    raises :class:`ConfigurationError`; with ``connection``, the error can tell its type."""
    try:
        return await channel.declare_queue(
            name,
            durable=not exclusive,
            exclusive=exclusive,
            auto_delete=exclusive,
            arguments=arguments(queue_type),
        )
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        current = None
        if connection is not None and not exclusive:
            current = await _probe(connection, name, other(queue_type), arguments)
        raise inequivalent_queue(name, queue_type, exc, current) from None


async def _probe(
    connection: AbstractConnection, name: str, queue_type: QueueType, arguments: Arguments
) -> QueueType | None:
    """``queue_type`` if RabbitMQ accepts re-declaring ``name`` as that type declares it
    (a no-op for an existing queue); ``None`` if not, or if the probe cannot run."""
    try:
        channel = aio_pika.Channel(connection, publisher_confirms=False)
        await channel.initialize()
    except Exception as exc:  # the connection is going away: the caller's error says enough
        logger.debug("cannot probe the type of queue %s: %s", name, exc)
        return None
    try:
        await channel.declare_queue(name, durable=True, arguments=arguments(queue_type))
    except aiormq.exceptions.AMQPError:
        return None
    finally:
        try:
            await channel.close()
        except Exception as exc:  # already closed by the broker's refusal
            logger.debug("closing the probe channel: %s", exc)
    return queue_type


def inequivalent_queue(
    name: str, queue_type: QueueType, exc: BaseException, current: QueueType | None = None
) -> ConfigurationError:
    """The error for queue ``name`` that exists with another type (``current``, when known)
    or other arguments than unimq declares with ``queue_type``."""
    text = " ".join(str(arg) for arg in exc.args) or str(exc)
    found = _INEQUIVALENT.search(text)
    if current is None and found is not None and found["arg"] == "x-queue-type":
        value = _value(found["current"])
        current = "classic" if value in {"none", "classic"} else "quorum"
        if value not in {"none", "classic", "quorum"}:  # a stream, say
            return _type_error(name, queue_type, value)
    if current is not None and current != queue_type:
        return _type_error(name, queue_type, current)
    if found is None:
        return ConfigurationError(f"RabbitMQ refused to declare queue {name!r}: {text}")
    arg = found["arg"]
    return ConfigurationError(
        f"queue {name!r} already exists with {arg}={_value(found['current'])}, and unimq "
        f"declares it with {arg}={_value(found['received'])} (queue_type={queue_type!r}): "
        "RabbitMQ cannot change a queue's arguments in place (x-single-active-consumer: the "
        "group was subscribed with another `ordered`; x-message-ttl or x-dead-letter-*: the "
        "queue was not declared by unimq). Drain and delete the queue "
        f"(rabbitmqctl delete_queue {name}) or keep the old setting"
    )


def _type_error(name: str, queue_type: QueueType, current: str) -> ConfigurationError:
    keep = f"; or set queue_type={current!r} to keep using it as it is"
    kept = {"quorum", "classic", "stream"}
    return ConfigurationError(
        f"queue {name!r} already exists as a {current} queue, and unimq is set to "
        f"queue_type={queue_type!r}: RabbitMQ cannot change a queue's type in place. Either "
        f"drain and delete the queue (rabbitmqctl delete_queue {name}), or migrate it (move "
        f"its messages elsewhere, e.g. with a shovel, then delete it), and unimq re-declares "
        f"it as {queue_type}" + (keep if current in kept else "")
    )


def _value(words: str) -> str:
    """``'quorum'`` or ``the value 'quorum' of type 'longstr'`` -> ``quorum``; ``none`` stays."""
    found = _VALUE.match(words.strip())
    return found["value"] if found else words.strip().strip("'\"") or "none"
