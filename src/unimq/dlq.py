"""Dead-letter operations: list, show, replay and purge, the same on every backend.

What ``unimq dlq`` runs, usable from Python too::

    async with Broker(url) as broker:               # connect is enough: no subscribers needed
        dlq = DeadLetterQueue(broker, "orders.created.inventory.dlq")
        page = await dlq.list(limit=20)
        result = await dlq.replay(Selection(reasons={"max-attempts"}))

It stands on the optional SPI :class:`~unimq.transport.SupportsDeadLetters`: a session hands
out the dead letters one at a time and removes one only when it is acked. Replay publishes the
copy durably *first* and acks (removes) the dead letter *after*, so an interrupted replay
duplicates at most the message it was working on and never loses one (at-least-once: the
replayed copy keeps its id, so idempotent subscribers run it once).

A replayed copy goes back to its original topic (``unimq-original-topic``) with the original
key, headers and id, its attempt count reset to 1, the dead-letter diagnostics removed, and a
``unimq-replayed-at`` header (ISO-8601 UTC). Every group subscribed to that topic receives
it; the groups that already handled it skip it when they are ``idempotent=True``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from . import envelope
from . import headers as h
from .errors import ConfigurationError, UnsupportedFeatureError
from .transport import DeadLetterSession, Delivery, SupportsDeadLetters

if TYPE_CHECKING:
    from .broker import Broker

REPLAYED_AT = h.REPLAYED_AT

Progress = Callable[[int, int], None]
"""``progress(examined, total)``: called after each dead letter a replay or purge examined
(handled, or left in place because the selection does not take it), out of the ``total`` in
the topic when it started; it reaches ``total`` at the end, filtered or not."""


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter, as ``unimq dlq list/show`` prints it."""

    id: str
    key: str | None
    reason: str
    error_type: str
    error_message: str
    attempts: int | None
    failed_at: str
    original_topic: str | None
    original_group: str | None
    headers: Mapping[str, str]
    body: bytes
    native_id: str

    @classmethod
    def from_delivery(cls, delivery: Delivery) -> DeadLetter:
        raw = delivery.headers
        attempts = raw.get(h.ATTEMPTS)
        return cls(
            id=envelope.read(delivery).id,
            key=delivery.key,
            reason=raw.get(h.DLQ_REASON, ""),
            error_type=raw.get(h.ERROR_TYPE, ""),
            error_message=raw.get(h.ERROR_MESSAGE, ""),
            attempts=int(attempts) if attempts and attempts.isdigit() else None,
            failed_at=raw.get(h.FAILED_AT, ""),
            original_topic=raw.get(h.ORIGINAL_TOPIC),
            original_group=raw.get(h.ORIGINAL_GROUP),
            headers=dict(raw),
            body=delivery.body,
            native_id=delivery.native_id,
        )

    def user_headers(self) -> dict[str, str]:
        """The publisher's own headers (no unimq bookkeeping, no diagnostics)."""
        return envelope.user_headers(self.headers)


@dataclass(frozen=True)
class Selection:
    """Which dead letters a replay or purge takes; every given criterion must hold.

    ``ids``: exact ids. ``reasons``: ``unimq-dlq-reason`` values (``max-attempts``,
    ``rejected``, ``non-retryable``, ``decode-error``). ``error_types``: shell-style patterns
    over ``unimq-error-type`` (``*TimeoutError``). ``keys``: exact keys. An empty selection
    takes everything.
    """

    ids: Collection[str] = field(default_factory=frozenset)
    reasons: Collection[str] = field(default_factory=frozenset)
    error_types: Collection[str] = field(default_factory=frozenset)
    keys: Collection[str] = field(default_factory=frozenset)

    @property
    def everything(self) -> bool:
        return not (self.ids or self.reasons or self.error_types or self.keys)

    def __call__(self, letter: DeadLetter) -> bool:
        if self.ids and letter.id not in self.ids:
            return False
        if self.reasons and letter.reason not in self.reasons:
            return False
        if self.error_types and not any(
            fnmatch.fnmatchcase(letter.error_type, pattern) for pattern in self.error_types
        ):
            return False
        return not (self.keys and letter.key not in self.keys)


@dataclass(frozen=True)
class Page:
    total: int
    letters: list[DeadLetter]


@dataclass(frozen=True)
class Outcome:
    """What a replay or purge did: ``done`` messages replayed (or purged), ``kept`` left."""

    done: int
    kept: int
    ids: list[str]


class DeadLetterQueue:
    """Operations on one dead-letter topic through a connected :class:`~unimq.Broker`."""

    def __init__(self, broker: Broker, topic: str) -> None:
        if not isinstance(topic, str) or not topic:
            raise ConfigurationError(f"the dead-letter topic must be a non-empty string: {topic!r}")
        transport = broker.transport
        if not isinstance(transport, SupportsDeadLetters):
            raise UnsupportedFeatureError(
                f"the {broker.url.scheme}:// transport cannot browse dead-letter topics "
                "(it does not implement unimq.transport.SupportsDeadLetters)"
            )
        self.broker = broker
        self.topic = topic
        self._transport = transport

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[DeadLetterSession]:
        session = await self._transport.open_dead_letters(self.topic)
        try:
            yield session
        finally:
            await session.close()

    async def count(self) -> int:
        async with self._session() as session:
            return await session.count()

    async def list(self, limit: int = 20, selection: Selection | None = None) -> Page:
        """The number of dead letters and the first ``limit`` (of those ``selection`` takes)."""
        letters: list[DeadLetter] = []
        async with self._session() as session:
            total = await session.count()
            while len(letters) < limit:
                delivery = await session.next()
                if delivery is None:
                    break
                letter = DeadLetter.from_delivery(delivery)
                if selection is None or selection(letter):
                    letters.append(letter)
        return Page(total, letters)

    async def show(self, message_id: str) -> DeadLetter | None:
        async with self._session() as session:
            while (delivery := await session.next()) is not None:
                letter = DeadLetter.from_delivery(delivery)
                if letter.id == message_id:
                    return letter
        return None

    async def replay(
        self,
        selection: Selection | None = None,
        *,
        to_topic: str | None = None,
        progress: Progress | None = None,
        limit: int | None = None,
    ) -> Outcome:
        """Publish the selected dead letters back, then remove them from the DLQ.

        ``to_topic`` overrides the original topic (needed for letters without
        ``unimq-original-topic``, such as messages other clients put on the topic).
        """
        return await self._take(selection, progress, limit, replay_to=to_topic, replay=True)

    async def purge(
        self,
        selection: Selection | None = None,
        *,
        progress: Progress | None = None,
        limit: int | None = None,
    ) -> Outcome:
        """Remove the selected dead letters for good."""
        return await self._take(selection, progress, limit, replay_to=None, replay=False)

    async def _take(
        self,
        selection: Selection | None,
        progress: Progress | None,
        limit: int | None,
        *,
        replay_to: str | None,
        replay: bool,
    ) -> Outcome:
        done: list[str] = []
        kept = 0
        async with self._session() as session:
            total = await session.count()
            if progress is not None:
                progress(0, total)
            while limit is None or len(done) < limit:
                delivery = await session.next()
                if delivery is None:
                    break
                letter = DeadLetter.from_delivery(delivery)
                if selection is not None and not selection(letter):
                    kept += 1
                    if progress is not None:
                        progress(len(done) + kept, total)
                    continue
                if replay:
                    await self._republish(letter, replay_to)
                await delivery.ack()
                done.append(letter.id)
                if progress is not None:
                    progress(len(done) + kept, total)
        return Outcome(len(done), kept, done)

    async def _republish(self, letter: DeadLetter, to_topic: str | None) -> None:
        topic = to_topic or letter.original_topic
        if not topic:
            raise ConfigurationError(
                f"dead letter {letter.id} has no {h.ORIGINAL_TOPIC} header (it was not "
                "dead-lettered by unimq); replay it with an explicit target topic (--to TOPIC)"
            )
        wire = envelope.replay_copy(letter.headers, message_id=letter.id, replayed_at=_now_iso())
        content_type = letter.headers.get(h.CONTENT_TYPE)
        await self.broker.publisher.send_now(
            topic, letter.body, wire, letter.key, letter.id, content_type, "replay"
        )


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
