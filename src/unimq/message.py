"""What a handler sees: :class:`Message`, one delivery of one published message."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Protocol


class Settler(Protocol):
    """The delivery pipeline's side of a message: how ack/nack/reject are carried out.

    Each call names the message, so one settler can serve many messages: a batch settles its
    messages through one object instead of one per message (``delivery.batch_settle``)."""

    async def ack(self, message: Message) -> None: ...

    async def nack(self, message: Message, delay: float | None) -> None: ...

    async def reject(self, message: Message, reason: str) -> None: ...


class Message:
    """One delivery of a message.

    ``id`` is stable across redeliveries, retries and the dead-letter copy; ``attempt`` is 1 on
    the first delivery and grows with every retry. ``headers`` are the publisher's headers (plus
    the diagnostic headers on a dead-letter copy); unimq's own bookkeeping headers are exposed
    as attributes instead.

    Settling is at most once: the first of ack/nack/reject wins and later calls do nothing, so a
    handler that acks early and then returns normally is not acked twice.
    """

    # The batch admission loop (``delivery.batching.admit_ready``) builds plain messages without
    # ``__init__``, setting each of these slots itself: a slot added here must be set there too
    # (tests/test_batch_admission.py compares every slot with ``envelope.message``'s).
    __slots__ = (
        "_settler",
        "attempt",
        "body",
        "content_type",
        "due",
        "group",
        "headers",
        "id",
        "key",
        "outcome",
        "published_at",
        "topic",
    )

    def __init__(
        self,
        id: str,
        topic: str,
        key: str | None,
        body: bytes,
        headers: Mapping[str, str],
        attempt: int,
        group: str,
        content_type: str | None = None,
        settler: Settler | None = None,
        published_at: float | None = None,
        due: float | None = None,
    ) -> None:
        self.id = id
        self.topic = topic
        self.key = key
        self.body = body
        self.headers = headers
        self.attempt = attempt
        self.group = group
        self.content_type = content_type
        self._settler = settler
        #: When the message was published (epoch seconds: ``unimq-published-at``, else the
        #: broker's timestamp), ``None`` if unknown; ``due``: when it was due, for a delayed
        #: message or a retry (epoch seconds). The delivery delay counts from the later one
        #: (:func:`unimq.instrumentation.delivery_delay`).
        self.published_at = published_at
        self.due = due
        #: What unimq decided the handler's ending means (``unimq.delivery.outcome``: Ack,
        #: Retry(delay), DeadLetter(reason), Manual), set before control returns to handler
        #: middleware; ``None`` before the handler ended.
        self.outcome: object | None = None

    async def ack(self) -> None:
        """Mark the message handled; it will not be delivered to this group again."""
        if self._settler is not None:
            await self._settler.ack(self)

    async def nack(self, delay: float | timedelta | None = None) -> None:
        """Retry the message (counts an attempt; after the policy's last attempt: the DLQ).

        ``delay`` overrides the policy's backoff for this retry.
        """
        if isinstance(delay, timedelta):
            delay = delay.total_seconds()
        if self._settler is not None:
            await self._settler.nack(self, delay)

    async def reject(self, reason: str = "") -> None:
        """Send the message to the dead-letter queue now, without retries."""
        if self._settler is not None:
            await self._settler.reject(self, reason)

    def __repr__(self) -> str:
        return (
            f"Message(id={self.id!r}, topic={self.topic!r}, key={self.key!r}, "
            f"group={self.group!r}, attempt={self.attempt}, body={len(self.body)} bytes)"
        )
