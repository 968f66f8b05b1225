"""Putting a message on the wire: bookkeeping headers, delay capping, size checks.

Shared by ``Broker.publish`` and the delivery pipeline's retry, re-hop and dead-letter copies,
so every copy of a message is built by the same rules.
"""

from __future__ import annotations

import logging

from . import headers as h
from .clock import Clock
from .errors import MessageTooLargeError, UnsupportedFeatureError
from .instrumentation import Publish, PublishKind, PublishMiddleware, PublishNext
from .transport import OutgoingMessage, Transport

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
        headers[h.DELIVER_AT] = str(int(due * 1000))
        max_delay = self._max_delay
        if max_delay == 0:
            raise UnsupportedFeatureError(
                "this backend cannot delay messages (no native delay); publish without delay"
            )
        deliver_at = due if max_delay is None else min(due, self.clock.now() + max_delay)
        message = OutgoingMessage(topic, body, headers, key, message_id, content_type, deliver_at)
        if self.middlewares:
            await self._through_middlewares(message, kind)
        else:
            await self.transport.publish(message)

    async def send_now(
        self,
        topic: str,
        body: bytes,
        headers: dict[str, str],
        key: str | None,
        message_id: str,
        content_type: str | None,
        kind: PublishKind = "publish",
    ) -> None:
        """``send`` without a delay: the path of nearly every publish, kept short."""
        if self._max_size is not None and len(body) > self._max_size:
            self._too_large(topic, body)
        message = OutgoingMessage(topic, body, headers, key, message_id, content_type)
        if self.middlewares:
            await self._through_middlewares(message, kind)
        else:
            await self.transport.publish(message)

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


def _bind(middleware: PublishMiddleware, publish: Publish, call_next: PublishNext) -> PublishNext:
    return lambda: middleware(publish, call_next)
