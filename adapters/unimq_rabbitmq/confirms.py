"""Confirmed publishing, the publishes of one event-loop turn written as one buffer.

For each message this does exactly what aiormq's ``basic_publish`` does: the next delivery
tag, a confirmation future registered where the channel resolves it (``Basic.Ack``; a
``DeliveryError`` for ``Basic.Nack``; the returned message for an unroutable ``mandatory``
publish, found through its message id), and the same frames; only the writing is batched
(:mod:`.batching` says why). It uses the aiormq channel attributes ``basic_publish`` itself
uses; :func:`supported` checks they are there, and the transport falls back to
``basic_publish`` when they are not (another aiormq version).

Each message is encoded (its frames marshalled) when it is queued, before it gets anything
else: a message pamqp refuses (a lone surrogate in a header, a message id over 255 bytes) fails
its own ``publish`` call with :class:`~unimq.errors.EncodeError` and takes no delivery tag, so
the broker's count of the frames written and the tags handed out can never drift apart (a
drift would resolve later confirmations on the wrong futures: messages never written reported
confirmed).

Delivery tags are handed out when the batch is flushed, not when a publish is queued, so a
publish withdrawn before the flush leaves no gap in the broker's count. One batcher owns the
publishing of its channel: nothing else may publish on that channel, or tags would be handed
out in a different order than frames are written.
"""

from __future__ import annotations

import asyncio
import struct
import uuid
from functools import partial
from typing import Any, NamedTuple

import aiormq
from pamqp.commands import Basic
from pamqp.frame import marshal
from pamqp.header import ContentHeader

from unimq.errors import EncodeError, PublishError

from .batching import TurnBatch

_CHANNEL_ATTRIBUTES = (
    "confirmations",
    "delivery_tag",
    "message_id_delivery_tag",
    "write_queue",
    "_split_body",
    "create_future",
    "create_task",
    "number",
)


def supported(channel: Any) -> bool:
    """Whether ``channel`` (an aiormq channel with confirms on) has what the batcher uses."""
    return bool(getattr(channel, "publisher_confirms", False)) and all(
        hasattr(channel, name) for name in _CHANNEL_ATTRIBUTES
    )


class _Publish(NamedTuple):
    """One queued publish: its encoded frames, its id and its confirmation."""

    frames: bytes
    message_id: str
    confirmation: asyncio.Future[Any]


class ConfirmBatcher(TurnBatch[_Publish]):
    """Publishes on one aiormq channel with confirms on."""

    def publish(
        self,
        body: bytes,
        *,
        exchange: str,
        routing_key: str,
        properties: Basic.Properties,
        mandatory: bool,
    ) -> asyncio.Future[Any]:
        """Queue one publish; the future resolves as ``basic_publish``'s confirmation would.

        Cancelling the future before the flush withdraws the publish (it is never sent);
        after the flush, the broker's answer for it is ignored, as aiormq does.
        """
        channel = self.channel
        if channel.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
        # A return is matched to its publish by message id, so every publish needs one.
        message_id = properties.message_id = properties.message_id or uuid.uuid4().hex
        frames = encode(channel, body, exchange, routing_key, properties, mandatory)
        confirmation: asyncio.Future[Any] = channel.create_future()
        self._add(_Publish(frames, message_id, confirmation), len(body))
        return confirmation

    def _undeliverable(self, items: list[_Publish]) -> None:
        closed = aiormq.exceptions.ChannelInvalidStateError(f"{self.channel!r} closed")
        for publish in items:
            if not publish.confirmation.done():
                publish.confirmation.set_exception(closed)

    def _failed(self, items: list[_Publish], error: Exception) -> None:
        failure = PublishError(f"the message could not be written to RabbitMQ: {error!r}")
        for publish in items:
            if not publish.confirmation.done():
                publish.confirmation.set_exception(failure)

    def _payload(self, items: list[_Publish]) -> bytes:
        channel = self.channel
        frames: list[bytes] = []
        for publish in items:
            confirmation = publish.confirmation
            if confirmation.done():  # withdrawn (cancelled) before it was sent
                continue
            channel.delivery_tag += 1
            tag = channel.delivery_tag
            message_id = publish.message_id
            channel.confirmations[tag] = confirmation
            channel.message_id_delivery_tag[message_id] = tag
            confirmation.add_done_callback(partial(self._forget, message_id, tag))
            frames.append(publish.frames)
        return b"".join(frames)

    def _forget(self, message_id: str, tag: int, _confirmation: asyncio.Future[Any]) -> None:
        mapping = self.channel.message_id_delivery_tag
        if mapping.get(message_id) == tag:
            del mapping[message_id]


def encode(
    channel: Any,
    body: bytes,
    exchange: str,
    routing_key: str,
    properties: Basic.Properties,
    mandatory: bool,
) -> bytes:
    """The frames of one publish, as ``basic_publish`` builds them, marshalled for ``channel``.

    Raises :class:`~unimq.errors.EncodeError` for what pamqp cannot encode (lone surrogates,
    short strings over 255 bytes, values of the wrong type)."""
    number = channel.number
    try:
        parts = [
            marshal(
                Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory),
                number,
            ),
            marshal(ContentHeader(properties=properties, body_size=len(body)), number),
        ]
        parts += [marshal(part, number) for part in channel._split_body(body)]
    except (TypeError, ValueError, struct.error) as exc:  # UnicodeError is a ValueError
        raise EncodeError(
            f"RabbitMQ cannot carry this message ({type(exc).__name__}: {exc}): header names "
            "and values, the key, the message id and the content type must be valid UTF-8 (no "
            "lone surrogates), the message id and the content type at most 255 bytes"
        ) from None
    return b"".join(parts)
