"""The requester side of request/reply: one private reply topic per broker instance.

``Broker.request`` publishes a message carrying ``unimq-reply-to`` (this instance's reply topic)
and ``unimq-correlation-id``; the subscriber's return value comes back on the reply topic with
the same correlation id (the responder side is in :mod:`unimq.delivery.settle`). The reply
topic is consumed through the ordinary transport SPI with a per-instance (broadcast-style)
subscription, so request/reply works on every backend without adapter code: a RabbitMQ
exclusive queue, a Kafka consumer assigned at the log end, a RocketMQ per-instance group, a
memory queue. It is opened on the first request (a publish-only service pays nothing) and
closed with the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from . import envelope
from .errors import NotConnectedError
from .message import Message
from .naming import reply_topic
from .transport import Subscription, SubscriptionSpec, Transport

logger = logging.getLogger("unimq.request")

#: How many replies may be unacked at once (they are acked as soon as they are matched).
REPLY_PREFETCH = 256


class Requests:
    """Open requests of one broker instance: futures keyed by correlation id."""

    def __init__(self, transport: Transport, instance_id: str) -> None:
        self.transport = transport
        self.topic = reply_topic(instance_id)
        self.group = f"unimq-reply-{instance_id}"
        self._pending: dict[str, asyncio.Future[Message]] = {}
        self._subscription: Subscription | None = None
        self._reader: asyncio.Task[None] | None = None
        self._opening = asyncio.Lock()

    async def open(self) -> None:
        """Subscribe to the reply topic (once); replies published after this are received."""
        if self._subscription is not None:
            return
        async with self._opening:
            if self._subscription is not None:
                return
            spec = SubscriptionSpec(
                topic=self.topic,
                group=self.group,
                prefetch=REPLY_PREFETCH,
                broadcast=self.transport.capabilities.broadcast,
            )
            self._subscription = await self.transport.subscribe(spec)
            self._reader = asyncio.create_task(self._read(self._subscription))

    def expect(self, correlation_id: str) -> asyncio.Future[Message]:
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        return future

    def forget(self, correlation_id: str) -> None:
        self._pending.pop(correlation_id, None)

    async def _read(self, subscription: Subscription) -> None:
        while True:
            delivery = await subscription.receive()
            if delivery is None:
                return
            env = envelope.read(delivery)
            future = self._pending.pop(env.correlation_id or "", None)
            try:
                await delivery.ack()
            except Exception as exc:  # a redelivered reply finds no future: harmless
                logger.warning("acking reply %s failed: %s", env.id, exc)
            if future is None or future.done():
                logger.debug(
                    "reply %s (correlation id %s) came after its request gave up; dropped",
                    env.id,
                    env.correlation_id,
                )
                continue
            future.set_result(envelope.message(delivery, env, self.group))

    async def close(self) -> None:
        subscription, self._subscription = self._subscription, None
        reader, self._reader = self._reader, None
        if subscription is None:
            return
        with contextlib.suppress(Exception):
            await subscription.stop()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        with contextlib.suppress(Exception):
            await subscription.close()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(
                    NotConnectedError("the broker stopped before the reply to a request came")
                )
        self._pending.clear()
