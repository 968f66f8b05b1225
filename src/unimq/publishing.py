"""Putting a message on the wire: bookkeeping headers, delay capping, size checks.

Shared by ``Broker.publish`` and the delivery pipeline's retry, re-hop and dead-letter copies,
so every copy of a message is built by the same rules.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterator, Sequence
from itertools import starmap
from typing import overload

from . import headers as h
from .batch_prepare import BodyBatch
from .clock import Clock
from .errors import MessageTooLargeError, UnsupportedFeatureError
from .instrumentation import Publish, PublishKind, PublishMiddleware, PublishNext
from .transport import OutgoingMessage, SupportsPublishBodies, SupportsPublishMany, Transport
from .validation import Prepared

logger = logging.getLogger("unimq.publish")


class Publisher:
    def __init__(self, transport: Transport, clock: Clock) -> None:
        self.transport = transport
        self.clock = clock
        capabilities = transport.capabilities
        self._max_delay = capabilities.max_delay
        self._max_size = capabilities.max_message_size
        self.middlewares: list[PublishMiddleware] = []

    async def send(
        self,
        topic: str,
        body: bytes,
        headers: dict[str, str],
        *,
        key: str | None,
        message_id: str,
        content_type: str | None,
        due: float | None = None,
        kind: PublishKind = "publish",
    ) -> None:
        """Publish durably; ``headers`` already hold ``unimq-id``/``-attempt``/``-content-type``.

        ``due`` (epoch seconds) delays delivery. A delay beyond the backend's native maximum is
        sent with the maximum and re-hopped by the consuming pipeline until it is due.
        """
        if due is None:
            await self.send_now(topic, body, headers, key, message_id, content_type, kind)
            return
        if self._max_size is not None and len(body) > self._max_size:
            self._too_large(topic, body)
        message = self._delayed(topic, body, headers, key, message_id, content_type, due)
        if self.middlewares:
            await self._through_middlewares(message, kind)
        else:
            await self.transport.publish(message)

    def send_now(
        self,
        topic: str,
        body: bytes,
        headers: dict[str, str],
        key: str | None,
        message_id: str,
        content_type: str | None,
        kind: PublishKind = "publish",
    ) -> Awaitable[None]:
        """``send`` without a delay: the path of nearly every publish, kept short. Not a
        coroutine itself: it hands back the transport's (or the middleware chain's), so an
        awaited publish runs one coroutine frame fewer, which every resumption of the
        publishing task passes through. Every caller awaits it at once: a refusal raised here
        reaches it exactly as one raised inside the coroutine did."""
        if self._max_size is not None and len(body) > self._max_size:
            self._too_large(topic, body)
        message = OutgoingMessage(topic, body, headers, key, message_id, content_type)
        if self.middlewares:
            return self._through_middlewares(message, kind)
        return self.transport.publish(message)

    @property
    def takes_columns(self) -> bool:
        """Whether :meth:`send_batch` hands a :class:`BodyBatch` to the transport as it is
        (``SupportsPublishBodies``, no publish middleware, which must see each message):
        ``publish_batch`` then builds one (``prepare_bodies(columns=True)``)."""
        return isinstance(self.transport, SupportsPublishBodies) and not self.middlewares

    async def send_batch(
        self,
        items: Sequence[Prepared] | BodyBatch,
    ) -> list[BaseException | None]:
        """``publish_batch``'s way out: items as ``prepare_publish`` builds them (topic, body,
        headers, key, id, content type, due); per item ``None`` (durable) or its error.

        A :class:`BodyBatch` goes to a ``SupportsPublishBodies`` transport as its columns (each
        body's size checked first, as for any item); elsewhere it is read as its items.

        A transport with ``publish_many`` gets them in one call (unless a publish middleware
        must see each message). Otherwise they go out concurrently, except that the items of
        one key go one after another: concurrent sends may overtake each other on the way (a
        client's thread pool), and a key's order is the order of the items."""
        transport = self.transport
        if type(items) is BodyBatch and self.takes_columns:
            return await self._send_columns(items)
        if isinstance(transport, SupportsPublishMany) and not self.middlewares:
            return await transport.publish_many(self._outgoing(items))
        chains: dict[str, list[int]] = {}
        alone: list[int] = []
        for index, item in enumerate(items):
            key = item[3]
            if key is None:
                alone.append(index)
            else:
                chains.setdefault(key, []).append(index)
        results: list[BaseException | None] = [None] * len(items)

        async def one(index: int) -> None:
            topic, body, headers, key, message_id, content_type, due = items[index]
            try:
                await self.send(
                    topic,
                    body,
                    headers,
                    key=key,
                    message_id=message_id,
                    content_type=content_type,
                    due=due,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                results[index] = exc

        async def chain(indexes: list[int]) -> None:
            for index in indexes:
                await one(index)

        await asyncio.gather(*(one(i) for i in alone), *(chain(c) for c in chains.values()))
        return results

    async def _send_columns(self, batch: BodyBatch) -> list[BaseException | None]:
        """``send_batch`` of a :class:`BodyBatch` to a ``SupportsPublishBodies`` transport."""
        bodies = batch.bodies
        max_size = self._max_size
        if max_size is not None and bodies and max(map(len, bodies)) > max_size:
            for body in bodies:  # the first one too large, as the per-item check names it
                if len(body) > max_size:
                    self._too_large(batch.topic, body)
        transport = self.transport
        assert isinstance(transport, SupportsPublishBodies)
        return await transport.publish_bodies(
            batch.topic, bodies, batch.key, batch.headers, h.ID, batch.ids
        )

    def _outgoing(self, items: Sequence[Prepared]) -> _OutgoingView:
        """Check every item's size and work out the delayed ones' ``deliver_at`` now (before
        anything is sent); the rest become :class:`OutgoingMessage` only as the transport
        reads them (:class:`_OutgoingView`)."""
        max_size = self._max_size
        delayed: dict[int, OutgoingMessage] = {}
        for index, (topic, body, headers, key, message_id, content_type, due) in enumerate(items):
            if max_size is not None and len(body) > max_size:
                self._too_large(topic, body)
            if due is None:  # the common case
                continue
            delayed[index] = self._delayed(topic, body, headers, key, message_id, content_type, due)
        return _OutgoingView(items, delayed)

    def _delayed(
        self,
        topic: str,
        body: bytes,
        headers: dict[str, str],
        key: str | None,
        message_id: str,
        content_type: str | None,
        due: float,
    ) -> OutgoingMessage:
        """A message due at ``due`` (epoch seconds): ``unimq-deliver-at`` set in ``headers``,
        ``deliver_at`` capped at the backend's native maximum delay (the consuming pipeline
        re-hops it until it is due); a backend without native delay refuses it."""
        headers[h.DELIVER_AT] = str(int(due * 1000))
        max_delay = self._max_delay
        if max_delay == 0:
            raise UnsupportedFeatureError(
                "this backend cannot delay messages (no native delay); publish without delay"
            )
        deliver_at = due if max_delay is None else min(due, self.clock.now() + max_delay)
        return OutgoingMessage(topic, body, headers, key, message_id, content_type, deliver_at)

    async def _through_middlewares(self, message: OutgoingMessage, kind: PublishKind) -> None:
        publish = Publish(kind, message)
        call: PublishNext = lambda: self.transport.publish(message)  # noqa: E731
        for middleware in reversed(self.middlewares):
            call = _bind(middleware, publish, call)
        await call()

    def _too_large(self, topic: str, body: bytes) -> None:
        raise MessageTooLargeError(
            f"message for {topic!r} is {len(body)} bytes; this backend accepts at most "
            f"{self._max_size} bytes"
        )


class _OutgoingView(Sequence[OutgoingMessage]):
    """``publish_batch``'s items as the :class:`OutgoingMessage` sequence ``publish_many``
    takes, each message built when it is read, so none outlives its use. A list of them lived
    as long as the batch's wait for the broker: one more object per item for the collector to
    promote and scan again and again (a large batch triggered full collections that cost more
    per message than the rest of unimq's own work). Reading an index twice gives equal,
    separate objects; ``delayed`` holds the few built ahead (their ``deliver_at`` is set)."""

    __slots__ = ("_delayed", "_items")

    def __init__(self, items: Sequence[Prepared], delayed: dict[int, OutgoingMessage]) -> None:
        self._items = items
        self._delayed = delayed

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> OutgoingMessage: ...

    @overload
    def __getitem__(self, index: slice) -> list[OutgoingMessage]: ...

    def __getitem__(self, index: int | slice) -> OutgoingMessage | list[OutgoingMessage]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self._items)))]
        index = range(len(self._items))[index]  # negative indexes; IndexError as a list says
        early = self._delayed.get(index)
        if early is not None:
            return early
        topic, body, headers, key, message_id, content_type, _ = self._items[index]
        return OutgoingMessage(topic, body, headers, key, message_id, content_type)

    def __iter__(self) -> Iterator[OutgoingMessage]:
        if self._delayed:
            return (self[i] for i in range(len(self._items)))
        # A Prepared tuple is OutgoingMessage's fields in order, its due (None: no item is
        # delayed) in deliver_at's place: built in C, without a generator frame.
        return starmap(OutgoingMessage, self._items)


def _bind(middleware: PublishMiddleware, publish: Publish, call_next: PublishNext) -> PublishNext:
    return lambda: middleware(publish, call_next)
