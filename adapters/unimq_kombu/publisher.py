"""A publishing kombu connection on its own thread; a transport keeps one or more.

SQS answers each ``SendMessage`` over HTTP, and routing needs a ``ListQueues`` first, so
one thread publishes a few hundred messages a second at most: ``publish_connections`` runs
several side by side (publishes are spread round-robin). Redis answers fast enough for one.

Publishes are group-committed: each waits in a list, and the thread takes the whole list at
once and sends it through kombu's ``Producer.batch()`` (on Redis one pipelined round trip for
all of them; on SQS kombu publishes one by one). A publish returns once its batch is on the
server, or raises the batch's error (then some of the batch may have been sent: at least
once). One wake-up of the event loop answers the whole batch.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from typing import Any

from unimq.transport import OutgoingMessage
from unimq.url import BrokerURL

from . import delays
from .connect import load_kombu, open_connection
from .options import KombuOptions
from .profiles import Profile
from .routing import Router
from .subscription import KEY_HEADER
from .worker import ConnectionThread

logger = logging.getLogger("unimq.kombu")


class Publisher:
    def __init__(self, url: BrokerURL, profile: Profile, options: KombuOptions, index: int) -> None:
        self.url = url
        self.profile = profile
        self.options = options
        self.thread = ConnectionThread(f"unimq-kombu-publish-{profile.kombu_scheme}-{index}")
        self._connection: Any = None
        self._router: Router | None = None
        self._producer: Any = None
        self._lock = threading.Lock()
        self._pending: list[tuple[OutgoingMessage, asyncio.Future[None]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._targets: dict[str, list[tuple[Any, str]]] = {}

    async def submit(self, message: OutgoingMessage) -> None:
        """Publish ``message`` with the next batch; returns when the batch was sent."""
        if self.thread.closed:
            raise RuntimeError("the publishing connection is closed")
        self._loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = self._loop.create_future()
        with self._lock:
            self._pending.append((message, future))
            first = len(self._pending) == 1
        if first:  # otherwise a flush is already queued and will take this one too
            self.thread.submit(self._flush)
        await future

    def _flush(self) -> None:  # on the thread
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return
        outcomes: list[BaseException | None] = [None] * len(batch)
        self._targets = {}  # looked up once per topic and batch: see send()
        try:
            with self._producer.batch():
                for index, (message, _) in enumerate(batch):
                    try:
                        self.publish(message)
                    except Exception as exc:
                        outcomes[index] = exc
        except Exception as exc:  # the batch itself failed to reach the server
            outcomes = [exc] * len(batch)
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(_settle, batch, outcomes)
            except RuntimeError:  # the loop closed: nobody waits any more
                pass

    async def start(self, moves_delays: bool) -> None:
        self.thread.start()
        try:
            await self.thread.call(self._open)
        except BaseException:
            await self.thread.stop()
            raise
        if moves_delays:
            self.thread.set_idle(self._move_delayed)

    def _open(self) -> None:
        kombu = load_kombu()
        self._connection = open_connection(self.url, self.profile, self.options)
        channel = self._connection.default_channel
        self._router = Router(channel, self.profile.routing == "prefix")
        self._producer = kombu.Producer(channel)

    async def stop(self) -> None:
        try:
            await self.thread.call(self._release)
        finally:
            await self.thread.stop()

    def _release(self) -> None:
        if self._connection is None:
            return
        self._connection.release()
        self._connection = None

    def publish(self, message: OutgoingMessage) -> None:
        """Runs on the thread: hold a delayed message (Redis) or send it."""
        delay = 0.0 if message.deliver_at is None else message.deliver_at - time.time()
        if delay > 0.01 and self.profile.delay == "sorted-set":
            assert message.deliver_at is not None
            delays.hold(self._connection.default_channel.client, message, message.deliver_at)
            return
        self.send(message, math.ceil(delay) if delay > 0.01 else 0)

    def send(self, message: OutgoingMessage, delay_seconds: int) -> None:
        """Runs on the thread: send one copy to each queue of the topic.

        The queues are looked up once per topic in a batch (on Redis a round trip each, most
        of a publish's cost otherwise). Every publish in a batch was submitted before the
        batch was taken, so a group whose subscribe returned before any of them is seen."""
        assert self._router is not None
        targets = self._targets.get(message.topic)
        if targets is None:
            targets = self._targets[message.topic] = self._router.targets(message.topic)
        headers = dict(message.headers)
        if message.key is not None:
            headers[KEY_HEADER] = message.key
        extra: dict[str, Any] = {"DelaySeconds": delay_seconds} if delay_seconds else {}
        for exchange, routing_key in targets:
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
        self._targets = {}
        try:
            delays.move_due(client, lambda m: self.send(m, 0))
        except Exception as exc:
            logger.warning("moving delayed messages failed: %s", self.url.mask(repr(exc)))


def _settle(
    batch: list[tuple[OutgoingMessage, asyncio.Future[None]]],
    outcomes: list[BaseException | None],
) -> None:
    for (_, future), outcome in zip(batch, outcomes, strict=True):
        if future.done():
            continue
        if outcome is None:
            future.set_result(None)
        else:
            future.set_exception(outcome)
