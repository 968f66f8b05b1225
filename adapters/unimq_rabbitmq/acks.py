"""Acks of one event-loop turn written as one buffer (:mod:`.batching` says why).

An ack is not answered by RabbitMQ, so nothing waits for it beyond the write: ``ack`` queues
the tag and returns. Tags are acked one by one (never ``multiple``): handlers finish out of
order, and one ``multiple`` ack would also settle deliveries still being handled. An ack that
cannot be written because the channel closed first is logged; RabbitMQ then redelivers the
message, as it would after any lost ack.
"""

from __future__ import annotations

import logging

import aiormq
from pamqp.commands import Basic
from pamqp.frame import marshal

from .batching import TurnBatch

logger = logging.getLogger("unimq.rabbitmq")


class AckBatcher(TurnBatch[int]):
    """Acks deliveries of one aiormq channel by delivery tag."""

    def ack(self, delivery_tag: int) -> None:
        if self.channel.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError(f"{self.channel!r} closed")
        self._add(delivery_tag)

    def _payload(self, items: list[int]) -> bytes:
        number = self.channel.number
        return b"".join([marshal(Basic.Ack(delivery_tag=tag), number) for tag in items])

    def _failed(self, items: list[int], error: Exception) -> None:
        logger.warning(
            "%d ack(s) not sent (%s); RabbitMQ will redeliver those messages", len(items), error
        )

    def _undeliverable(self, items: list[int]) -> None:
        logger.warning(
            "%d ack(s) not sent: the channel closed first; RabbitMQ will redeliver those messages",
            len(items),
        )
