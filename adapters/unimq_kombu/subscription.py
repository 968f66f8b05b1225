"""One subscription: a kombu ``Consumer`` on a connection thread of its own.

The thread drains broker events with a short timeout and runs queued acks in between; the
consumer's callback hands each message to the loop through an ``asyncio.Queue`` that the
core's workers empty with :meth:`KombuSubscription.receive`. kombu's QoS (``prefetch_count``)
bounds how many unacked messages the thread takes, which is the back-pressure.

Closing hands unacked deliveries back. On Redis, closing the kombu channel does it (kombu
restores its channel's unacked messages); a ``requeue()`` before that races the consumer's
pending ``BRPOP``, which can pop the requeued message again while the channel closes (seen
losing it). On SQS each unacked message is made visible again (see :func:`_give_back_sqs`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from unimq.transport import SubscriptionSpec
from unimq.url import BrokerURL

from . import names
from .connect import load_kombu, open_connection
from .options import KombuOptions
from .profiles import Profile
from .routing import Router
from .worker import ConnectionThread

logger = logging.getLogger("unimq.kombu")

LIVENESS_SECONDS = 2.0
KEY_HEADER = "unimq-key"  # the core refuses user headers named unimq-*


class KombuDelivery:
    __slots__ = ("_done", "_message", "_owner", "body", "headers", "key", "native_id", "topic")

    def __init__(self, topic: str, message: Any, owner: KombuSubscription) -> None:
        headers = dict(message.headers or {})
        self.key: str | None = headers.pop(KEY_HEADER, None)
        if headers.get("redelivered") is True:  # kombu's Redis restore marks the headers;
            del headers["redelivered"]  # unimq headers are strings, so this is never ours
        self.topic = topic
        self.headers: Mapping[str, str] = {str(k): str(v) for k, v in headers.items()}
        body = message.body
        self.body: bytes = body if isinstance(body, bytes) else str(body).encode()
        self.native_id = native_id(message)
        self._message = message
        self._owner = owner
        self._done = False

    async def ack(self) -> None:
        if self._done:
            return
        self._done = True
        await self._owner.settle(self)

    @classmethod
    async def ack_many(cls, deliveries: Sequence[KombuDelivery]) -> None:
        """``ack`` of each (:class:`unimq.transport.SupportsAckMany`): an ack only queues the
        message for the connection thread's next flush (one pipelined round trip on Redis),
        so this is what ``ack`` does, and it spares the core a ``Settlement`` per message of
        a batch that succeeded."""
        for delivery in deliveries:
            await delivery.ack()


def native_id(message: Any) -> str:
    sqs_message = (message.delivery_info or {}).get("sqs_message") or {}
    if sqs_message.get("MessageId"):
        return str(sqs_message["MessageId"])
    return str(message.properties.get("delivery_tag") or message.delivery_tag)


class KombuSubscription:
    def __init__(
        self, url: BrokerURL, profile: Profile, options: KombuOptions, spec: SubscriptionSpec
    ) -> None:
        self.url = url
        self.profile = profile
        self.options = options
        self.spec = spec
        self._sqs = profile.routing == "prefix"
        self._queue: asyncio.Queue[KombuDelivery | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._thread = ConnectionThread(
            f"unimq-kombu-{spec.topic}-{spec.group}", poll=options.poll_interval
        )
        self._unacked: dict[int, KombuDelivery] = {}
        self._arrived: list[KombuDelivery] = []  # delivered by kombu, not yet passed to the loop
        self._ack_lock = threading.Lock()
        self._acks: list[Any] = []  # kombu messages whose ack waits for the thread
        self._connection: Any = None
        self._consumer: Any = None
        self._kombu_queue: Any = None
        self._stopped = False
        self._closed = False
        self._run_id = ""
        self._next_check = 0.0

    async def start(self) -> None:
        self._thread.start()
        try:
            await self._thread.call(self._open)
        except BaseException:
            await self._thread.stop()
            raise
        self._thread.set_idle(self._drain, idle_blocks=True)

    def _open(self) -> None:
        kombu = load_kombu()

        self._connection = open_connection(self.url, self.profile, self.options)
        channel = self._connection.channel()
        router = Router(channel, self._sqs)
        spec = self.spec
        self._kombu_queue = router.declare_group_queue(spec.topic, spec.group, spec.broadcast)
        if not spec.broadcast:
            self._inherit_holding(channel, router)
        self._consumer = kombu.Consumer(
            channel,
            queues=[self._kombu_queue],
            on_message=self._on_message,
            no_ack=False,
            prefetch_count=spec.prefetch,
        )
        self._consumer.consume()
        if not self._sqs:
            self._run_id = self._server_id()
            self._next_check = time.monotonic() + LIVENESS_SECONDS

    def _inherit_holding(self, channel: Any, router: Router) -> None:
        """The first group of a topic takes what was published before anyone subscribed."""
        kombu = load_kombu()

        holding = names.holding_queue(self.spec.topic, self._sqs)
        if self._sqs:
            if holding not in router.sqs_names(self.spec.topic):
                return
        elif not channel.client.exists(holding):
            return
        producer = kombu.Producer(channel)
        target = self._kombu_queue
        while True:
            message = channel.basic_get(holding, no_ack=False)
            if message is None:
                break
            producer.publish(
                message.body,
                exchange="",
                routing_key=target.name,
                headers=message.headers,
                content_type="application/octet-stream",
                content_encoding="binary",
                delivery_mode=2,
                retry=False,
            )
            message.ack()
        if self._sqs:
            channel.queue_delete(holding)
        else:
            kombu.Queue(holding, router.exchange(self.spec.topic), routing_key=self.spec.topic)(
                channel
            ).delete()

    def _on_message(self, message: Any) -> None:  # on the connection thread
        self._arrived.append(KombuDelivery(self.spec.topic, message, self))

    def _pass_arrived(self) -> None:  # on the connection thread, after each drain_events
        """Hand what one ``drain_events`` delivered to the loop in one wake-up (a Redis take
        delivers up to a whole prefetch window at once: one cross-thread call serves it)."""
        if not self._arrived:
            return
        arrived, self._arrived = self._arrived, []
        self._loop.call_soon_threadsafe(self._hand_out, arrived)

    def _hand_out(self, deliveries: list[KombuDelivery]) -> None:
        for delivery in deliveries:
            self._unacked[id(delivery)] = delivery
            if not self._stopped:  # otherwise kept unacked: close() gives it back
                self._queue.put_nowait(delivery)

    def _drain(self) -> bool:
        """One step of the consumer thread; ``False`` when the prefetch window is full.

        With the window full kombu sends no wait to the broker, and ``drain_events`` would
        only sleep its timeout while the acks that reopen the window queue up behind it
        (that capped a consumer at one window per ``poll_interval``). It then runs once
        without waiting (kombu's housekeeping: restoring expired unacked messages, the
        connection health check, the liveness check), and the thread waits for calls (the
        acks) instead."""
        if self._stopped:
            self._thread_sleep()
            return True
        if self._connection is None:  # a reconnect failed: try again
            self._reconnect()
            return True
        full = not self._consumer.channel.qos.can_consume()
        try:
            try:
                self._connection.drain_events(timeout=0 if full else self.options.poll_interval)
            finally:
                self._pass_arrived()
        except TimeoutError:
            self._check_alive()  # also when full: failing acks would keep it full for good
            return not full
        except Exception as exc:
            logger.warning(
                "kombu consumer of %r lost its connection: %s",
                self.spec.topic,
                self.url.mask(f"{type(exc).__name__}: {exc}"),
            )
            self._reconnect()
        return True

    def _check_alive(self) -> None:
        """Reconnect if the Redis server restarted while this consumer was idle.

        kombu's Redis poller unregisters the socket of a ``BRPOP`` that lost its server and
        then only times out, so a consumer would wait forever after a restart. Every
        ``LIVENESS_SECONDS`` of idleness it compares the server's ``run_id`` with the one it
        consumed from (any error counts as a change).
        """
        if self._sqs:
            return  # every SQS poll is a new HTTP request: errors surface by themselves
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + LIVENESS_SECONDS
        try:
            same = self._server_id() == self._run_id
        except Exception:
            same = False
        if not same:
            logger.warning("kombu consumer of %r: the Redis server restarted", self.spec.topic)
            self._reconnect()

    def _server_id(self) -> str:
        # Not ``channel.client``: that is the connection of the pending BRPOP, whose reply
        # another command would read (and the message in it would be lost).
        with self._consumer.channel.conn_or_acquire() as client:
            return str(client.info("server").get("run_id"))

    def _thread_sleep(self) -> None:
        time.sleep(self.options.poll_interval)

    def _reconnect(self) -> None:
        """Consume again on a new connection; the broker redelivers what was unacked."""
        time.sleep(0.5)
        try:
            old, self._connection = self._connection, None
            if old is not None:
                try:
                    old.release()
                except Exception:
                    pass
            self._open()
        except Exception as exc:
            logger.warning(
                "kombu consumer of %r cannot reconnect yet: %s",
                self.spec.topic,
                self.url.mask(f"{type(exc).__name__}: {exc}"),
            )

    async def receive(self) -> KombuDelivery | None:
        if self._stopped:
            return None
        delivery = await self._queue.get()
        if delivery is None:
            self._queue.put_nowait(None)  # wake the next waiting receiver too
        return delivery

    async def settle(self, delivery: KombuDelivery) -> None:
        """Queue the ack on the connection thread without waiting for it.

        The thread runs calls in order, so an ack queued before :meth:`close` runs before the
        close gives unacked messages back. A failed ack is logged by the thread; the broker
        redelivers the message (at least once).
        """
        self._unacked.pop(id(delivery), None)
        if self._closed:
            return
        with self._ack_lock:
            self._acks.append(delivery._message)
            first = len(self._acks) == 1
        if first:  # otherwise a flush is queued already and takes this ack too
            self._thread.submit(self._flush_acks)

    def _flush_acks(self) -> None:  # on the connection thread
        """Run the acks queued since the last flush: on Redis in one pipelined round trip."""
        with self._ack_lock:
            messages, self._acks = self._acks, []
        if not messages:
            return
        qos = messages[0].channel.qos
        if hasattr(qos, "ack_many") and all(m.channel is messages[0].channel for m in messages):
            qos.ack_many([m.delivery_tag for m in messages])
            return
        for message in messages:
            try:
                message.ack()
            except Exception as exc:  # the broker redelivers it (at least once)
                logger.warning("kombu ack failed (it is redelivered): %r", type(exc))

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._queue.put_nowait(None)
        try:
            await self._thread.call(self._cancel)
        except Exception as exc:
            logger.warning("kombu cancel failed: %s", self.url.mask(repr(exc)))

    def _cancel(self) -> None:
        if self._consumer is not None:
            self._consumer.cancel()

    async def close(self) -> None:
        if self._closed:
            return
        await self.stop()
        pending = list(self._unacked.values())
        self._unacked.clear()
        for delivery in pending:
            delivery._done = True
        try:
            await self._thread.call(lambda: self._release([d._message for d in pending]))
        except Exception as exc:
            logger.warning("kombu close failed: %s", self.url.mask(repr(exc)))
        self._closed = True
        await self._thread.stop()

    def _release(self, pending: list[Any]) -> None:
        if self._sqs:
            for message in pending:
                try:
                    _give_back_sqs(message)
                except Exception:  # SQS gives it back after the visibility timeout anyway
                    logger.debug("giving back an SQS message failed", exc_info=True)
        # Redis: closing the channel restores them (see the module docstring).
        if self.spec.broadcast and self._kombu_queue is not None:
            try:
                self._kombu_queue(self._consumer.channel).delete()
            except Exception:
                pass
        if self._connection is not None:
            self._connection.release()
            self._connection = None


def _give_back_sqs(message: Any) -> None:
    """Make an unacked SQS message visible again at once, and forget it in kombu.

    kombu's own ``requeue()`` (and its restore when a channel closes) sends a new copy and
    leaves the original to reappear after the visibility timeout: two deliveries. Changing
    the visibility gives back the one message; kombu's QoS then forgets it without the
    ``DeleteMessage`` its SQS ``basic_ack`` would send.
    """
    info = message.delivery_info or {}
    sqs_message, queue_url = info.get("sqs_message"), info.get("sqs_queue")
    channel = message.channel
    if sqs_message and queue_url:
        channel.sqs().change_message_visibility(
            QueueUrl=queue_url, ReceiptHandle=sqs_message["ReceiptHandle"], VisibilityTimeout=0
        )
    channel.qos.ack(message.delivery_tag)
