"""Deliveries handed to a subscription by the channel's reader itself, without a task each.

Why: aiormq runs every consumer callback in a task of its own (``Channel._on_deliver_frame``
ends in ``create_task(consumer(message))``, with a done callback and its future store's
book-keeping). A subscription's callback only notes the delivery tag and puts the message in
its inbox, so that task cost more than the work it carried.

:func:`consume` starts a consumer whose callback is a plain function. On that channel only, the
channel object's ``_on_deliver_frame`` is replaced by an :class:`InlineDeliveries`, which reads
the message's header and body frames the way aiormq does (same checks, same
``DeliveredMessage``) and calls the function in the reader's own task, in delivery order.
Consumers that are not registered here (none in unimq; a user's, on a channel of their own,
are never touched) go through aiormq's own method.

The same channel's frame queue is widened to hold a whole prefetch of deliveries
(:func:`widen_frames`). aiormq bounds each channel's queue of received frames at 10
(``Connection.FRAME_BUFFER_SIZE``; aio-pika opens channels without a way to pass another),
about three messages of three frames each: the connection's reader task then stopped every
three messages until the channel's reader task had caught up, a future and two task switches
each time, and a stop that holds up every channel of the connection. A consuming channel never
holds more than its prefetch of unacked deliveries, so a queue of three frames per delivery
(plus a margin) is as bounded as before and never makes the reader wait for a message that
fits in the prefetch. Together the two changes took the client's CPU per consumed message on
the 2-core benchmark machine from 65-100 µs to 47-59 µs (issue 14; docs/backends/rabbitmq.md and
benchmarks/README.md have the runs).

This leans on three aiormq internals, checked by tests/test_rabbitmq_inline.py against the
installed aiormq: ``Channel._reader`` awaits ``self._on_deliver_frame(frame)`` for each
``Basic.Deliver``, ``Channel._get_frame()`` returns the channel's next frame, and the frames
wait in ``Channel.frames``, an ``asyncio.Queue`` (whose bound is its ``_maxsize``). Should a
later aiormq stop calling the method, nothing breaks: the consumer is also registered with
``basic_consume`` as an ``async`` callback doing the same, which aiormq then runs its own way;
and a ``frames`` that is not an ``asyncio.Queue`` keeps its bound.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiormq.abc
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

logger = logging.getLogger("unimq.rabbitmq")

OnMessage = Callable[[aiormq.abc.DeliveredMessage], None]


class InlineDeliveries:
    """A channel's ``_on_deliver_frame`` that calls registered consumers inline."""

    def __init__(self, channel: Any, fallback: Callable[[spec.Basic.Deliver], Awaitable[None]]):
        self._channel = channel
        self._fallback = fallback
        self.consumers: dict[str, OnMessage] = {}
        self.inlined = 0  # deliveries handed over inline (tests read it)

    async def __call__(self, frame: spec.Basic.Deliver) -> None:
        on_message = self.consumers.get(frame.consumer_tag or "")
        if on_message is None:
            await self._fallback(frame)
            return
        channel = self._channel
        header = await channel._get_frame()
        if not isinstance(header, ContentHeader):
            raise ValueError(f"Unexpected frame {header!r} instead of ContentHeader", header)
        size = header.body_size or 0
        body = b""
        if size:
            parts: list[bytes] = []
            received = 0
            while received < size:
                content = await channel._get_frame()
                if not isinstance(content, ContentBody):
                    raise ValueError(f"Unexpected frame {content!r}", content)
                parts.append(content.value)
                received += len(content.value)
            body = parts[0] if len(parts) == 1 else b"".join(parts)
        message = aiormq.abc.DeliveredMessage(
            delivery=frame, header=header, body=body, channel=channel
        )
        self.inlined += 1
        try:
            on_message(message)
        except Exception:  # as aiormq's own consumer tasks: logged, the channel reads on
            logger.exception("consumer callback failed")


def _installed(channel: Any) -> InlineDeliveries | None:
    installed = getattr(channel, "_on_deliver_frame", None)
    return installed if isinstance(installed, InlineDeliveries) else None


def deliveries(channel: Any) -> InlineDeliveries:
    """The :class:`InlineDeliveries` of an aiormq channel, installed on first use."""
    installed = _installed(channel)
    if installed is not None:
        return installed
    inline = InlineDeliveries(channel, channel._on_deliver_frame)
    channel._on_deliver_frame = inline
    return inline


#: Frames a delivery takes in a channel's frame queue (method, header, one body frame), and the
#: margin for the channel's other frames (replies to its own calls, a cancel).
FRAMES_PER_DELIVERY = 3
FRAME_MARGIN = 32


def widen_frames(channel: Any, prefetch: int) -> int:
    """Let ``channel``'s frame queue hold ``prefetch`` deliveries (never narrower than it is,
    unbounded stays unbounded; ``prefetch`` 0, no limit, changes nothing); returns the bound."""
    frames = getattr(channel, "frames", None)
    if not isinstance(frames, asyncio.Queue):
        return 0
    bound = frames.maxsize
    if prefetch > 0 and bound > 0:
        bound = max(bound, FRAMES_PER_DELIVERY * prefetch + FRAME_MARGIN)
        frames._maxsize = bound  # type: ignore[attr-defined]  # (no public setter)
    return bound


async def consume(
    channel: Any,
    queue: str,
    on_message: OnMessage,
    *,
    prefetch: int,
    arguments: dict[str, Any] | None = None,
) -> str:
    """``basic_consume`` of ``queue`` on ``channel`` (an aiormq channel, acks expected, QoS
    ``prefetch``), ``on_message`` called inline for each delivery; returns the consumer tag."""

    async def callback(message: aiormq.abc.DeliveredMessage) -> None:
        on_message(message)  # only if aiormq ever bypasses InlineDeliveries

    widen_frames(channel, prefetch)
    inline = deliveries(channel)
    tag = f"unimq.{uuid.uuid4().hex}"
    inline.consumers[tag] = on_message  # before the first delivery can arrive
    try:
        ok = await channel.basic_consume(
            queue, callback, no_ack=False, arguments=arguments, consumer_tag=tag
        )
    except BaseException:
        inline.consumers.pop(tag, None)
        raise
    return str(ok.consumer_tag)


def forget(channel: Any, tag: str) -> None:
    """Unregister a consumer (cancelled); a no-op where it is not registered."""
    installed = _installed(channel)
    if installed is not None:
        installed.consumers.pop(tag, None)
