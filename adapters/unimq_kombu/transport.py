"""``kombu+<transport>://``: unimq over kombu's ``Connection``/``Producer``/``Consumer``.

kombu's API is synchronous, so each kombu connection lives on a thread of its own
(:class:`~unimq_kombu.worker.ConnectionThread`): one for publishing, one per subscription.
The event loop only awaits results. What each kombu transport can do is in
:mod:`unimq_kombu.profiles`.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Mapping
from typing import Any

from unimq.errors import ConfigurationError, PublishError, UnimqError
from unimq.transport import OutgoingMessage, SubscriptionSpec, TransportContext
from unimq.url import BrokerURL

from . import delays
from .connect import connect_error, load_kombu, open_connection
from .options import parse_options
from .profiles import PROFILES
from .routing import Router
from .subscription import KEY_HEADER, KombuSubscription
from .worker import ConnectionThread

logger = logging.getLogger("unimq.kombu")


class KombuTransport:
    def __init__(self, url: BrokerURL, options: Mapping[str, Any], context: TransportContext):
        name = url.scheme.split("+", 1)[-1]
        profile = PROFILES.get(name)
        if profile is None:
            raise ConfigurationError(f"{url.scheme}:// is not a kombu transport unimq knows")
        self.url = url
        self.profile = profile
        self.capabilities = profile.capabilities
        self.options = parse_options(options)
        self.context = context
        self._thread: ConnectionThread | None = None
        self._connection: Any = None
        self._router: Router | None = None
        self._producer: Any = None
        self._subscriptions: list[KombuSubscription] = []
        self._mover_token = uuid.uuid4().hex

    async def connect(self) -> None:
        if self._thread is not None:
            return
        thread = ConnectionThread(f"unimq-kombu-publish-{self.profile.kombu_scheme}")
        thread.start()
        try:
            await thread.call(self._open)
        except BaseException:
            await thread.stop()
            raise
        if self.profile.delay == "sorted-set":
            thread.set_idle(self._move_delayed)
        self._thread = thread

    def _open(self) -> None:
        kombu = load_kombu()

        self._connection = open_connection(self.url, self.profile, self.options)
        channel = self._connection.default_channel
        self._router = Router(channel, self.profile.routing == "prefix")
        self._producer = kombu.Producer(channel)

    async def close(self) -> None:
        for subscription in self._subscriptions:
            await subscription.close()
        self._subscriptions.clear()
        thread, self._thread = self._thread, None
        if thread is not None:
            try:
                await thread.call(self._release)
            finally:
                await thread.stop()

    def _release(self) -> None:
        if self._connection is not None and self.profile.delay == "sorted-set":
            try:
                delays.release(self._connection.default_channel.client, self._mover_token)
            except Exception as exc:  # it expires within a second anyway
                logger.debug("releasing the delay mover lock failed: %r", type(exc))
        if self._connection is not None:
            self._connection.release()
            self._connection = None

    async def publish(self, message: OutgoingMessage) -> None:
        thread = self._thread
        if thread is None:
            raise PublishError(f"{self.url.redacted()}: not connected")
        try:
            await thread.call(lambda: self._publish(message))
        except UnimqError:
            raise
        except Exception as exc:
            raise PublishError(
                f"publishing to {message.topic!r} on {self.url.redacted()} failed: "
                f"{self.url.mask(f'{type(exc).__name__}: {exc}')}"
            ) from None

    def _publish(self, message: OutgoingMessage) -> None:
        delay = 0.0 if message.deliver_at is None else message.deliver_at - time.time()
        if delay > 0.01 and self.profile.delay == "sorted-set":
            assert message.deliver_at is not None
            delays.hold(self._connection.default_channel.client, message, message.deliver_at)
            return
        self._send(message, math.ceil(delay) if delay > 0.01 else 0)

    def _send(self, message: OutgoingMessage, delay_seconds: int) -> None:
        assert self._router is not None
        headers = dict(message.headers)
        if message.key is not None:
            headers[KEY_HEADER] = message.key
        extra: dict[str, Any] = {"DelaySeconds": delay_seconds} if delay_seconds else {}
        for exchange, routing_key in self._router.targets(message.topic):
            self._producer.publish(
                message.body,
                exchange=exchange,
                routing_key=routing_key,
                headers=headers,
                content_type="application/octet-stream",
                content_encoding="binary",
                delivery_mode=2,
                retry=False,
                **extra,
            )

    def _move_delayed(self) -> None:
        if self._connection is None:
            return
        client = self._connection.default_channel.client
        try:
            delays.move_due(client, lambda m: self._send(m, 0), self._mover_token)
        except Exception as exc:
            logger.warning("moving delayed messages failed: %s", self.url.mask(repr(exc)))

    async def subscribe(self, spec: SubscriptionSpec) -> KombuSubscription:
        if self._thread is None:
            raise PublishError(f"{self.url.redacted()}: not connected")
        subscription = KombuSubscription(self.url, self.profile, self.options, spec)
        try:
            await subscription.start()
        except UnimqError:
            raise
        except Exception as exc:
            raise connect_error(self.url, exc) from None
        self._subscriptions.append(subscription)
        return subscription
