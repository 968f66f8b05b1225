"""Acks of one event-loop turn written as one buffer (:mod:`.batching` says why), as few frames
as is safe.

An ack is not answered by RabbitMQ, so nothing waits for it beyond the write: ``ack`` queues
the tag and returns. An ack that cannot be written because the channel closed first is logged;
RabbitMQ then redelivers the message, as it would after any lost ack.

Multiple acks, where safe: handlers finish out of order, so a ``multiple`` ack up to a tag
would also settle deliveries still being handled. A batcher that is told of every delivery on
its channel (``delivered``, in tag order) knows the oldest one not yet acked; the acks of a
turn that close the gap from it upwards go out as one ``multiple=True`` ack of the highest of
them, the others one by one. So a batch subscriber acking 256 deliveries writes one frame, not
256, and RabbitMQ does one settle instead of 256. A delivery that is never acked (its handler
still running, a crash) only stops the run at its tag; past ``MAX_PARKED`` acks waiting behind
one such gap the batcher stops counting and acks one by one from then on.
"""

from __future__ import annotations

import logging
from collections import deque

import aiormq
from pamqp.commands import Basic
from pamqp.frame import marshal

from .batching import TurnBatch

logger = logging.getLogger("unimq.rabbitmq")

#: Acks kept waiting behind an unacked delivery before the batcher gives up multiple acks.
MAX_PARKED = 65_536


class AckBatcher(TurnBatch[int]):
    """Acks deliveries of one aiormq channel by delivery tag.

    ``track=True``: the owner calls :meth:`delivered` for every delivery of the channel, in
    order, which allows multiple acks; without it every ack is its own frame."""

    def __init__(self, channel: object, *, track: bool = False) -> None:
        super().__init__(channel)
        # Delivered tags from the oldest not acked on (None: not tracking).
        self._outstanding: deque[int] | None = deque() if track else None
        self._acked: set[int] = set()  # queued or written, still in _outstanding
        self._written: set[int] = set()  # written one by one, still in _outstanding

    def delivered(self, delivery_tag: int) -> None:
        if self._outstanding is not None:
            self._outstanding.append(delivery_tag)

    def ack(self, delivery_tag: int) -> None:
        if self.channel.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError(f"{self.channel!r} closed")
        self._add(delivery_tag)

    def _payload(self, items: list[int]) -> bytes:
        number = self.channel.number
        outstanding = self._outstanding
        if outstanding is None:
            return b"".join([marshal(Basic.Ack(delivery_tag=tag), number) for tag in items])
        acked, written = self._acked, self._written
        acked.update(items)
        top = None  # the highest tag acked by one multiple ack (not yet written itself)
        while outstanding and outstanding[0] in acked:
            tag = outstanding.popleft()
            acked.discard(tag)
            if tag in written:
                written.discard(tag)
            else:
                top = tag
        frames = (
            [] if top is None else [marshal(Basic.Ack(delivery_tag=top, multiple=True), number)]
        )
        for tag in items:
            if tag in acked:  # behind a delivery not yet acked: on its own
                frames.append(marshal(Basic.Ack(delivery_tag=tag), number))
                written.add(tag)
        if len(acked) > MAX_PARKED:  # one delivery never acked: stop counting
            self._outstanding = None
            acked.clear()
            written.clear()
        return b"".join(frames)

    def _failed(self, items: list[int], error: Exception) -> None:
        logger.warning(
            "%d ack(s) not sent (%s); RabbitMQ will redeliver those messages", len(items), error
        )

    def _undeliverable(self, items: list[int]) -> None:
        logger.warning(
            "%d ack(s) not sent: the channel closed first; RabbitMQ will redeliver those messages",
            len(items),
        )
