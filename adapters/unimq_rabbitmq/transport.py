"""``amqp://`` / ``amqps://``: unimq's transport on RabbitMQ, through aio-pika.

One robust connection per broker (aio-pika reconnects and restores channels, queues and
consumers by itself). Publishing uses one channel with publisher confirms and ``mandatory``:
``publish`` returns when RabbitMQ confirmed the message, and an unroutable message (no queue
bound to the topic) is an error, not a silent loss. Many publishes may wait for their confirms
at once (``publish_window``), so concurrent publishers are pipelined, and the publishes that
are ready together are written to the socket together (:mod:`.confirms`). Each subscription has its
own channel with ``prefetch`` = the subscriber's prefetch, so RabbitMQ never pushes more than
the core can hold.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractQueue,
    AbstractRobustConnection,
)
from pamqp.commands import Basic

from unimq import headers as h
from unimq.errors import (
    ConfigurationError,
    ConnectionFailedError,
    NotConnectedError,
    PublishError,
    UnimqError,
    UnsupportedFeatureError,
)
from unimq.slots import Slots
from unimq.transport import Capabilities, OutgoingMessage, SubscriptionSpec, TransportContext
from unimq.url import BrokerURL

from . import confirms, failures, inline, nodes, topology, wire_headers
from .acks import AckBatcher
from .confirms import ConfirmBatcher
from .options import RabbitMQOptions
from .queue_types import QueueType

if TYPE_CHECKING:
    from .dead_letters import RabbitMQDeadLetters

logger = logging.getLogger("unimq.rabbitmq")

KEY_HEADER = wire_headers.KEY_HEADER  # kept importable from here

CAPABILITIES = Capabilities(
    max_delay=float(topology.MAX_DELAY_SECONDS),
    ordering=True,
    broadcast=True,
    durable=True,
    max_message_size=128 * 1024 * 1024,
    revocable=True,
    keeps_unread=False,  # an exchange with no queue bound returns the message: PublishError
)
#: ``queue_type=stream``: group queues are streams, which keep what they delivered.
STREAM_CAPABILITIES = dataclasses.replace(CAPABILITIES, rewind=True)


class RabbitMQDelivery:
    """A delivery decoded from its AMQP properties; ``ack`` acks it on the channel it came on
    (through that channel's :class:`~.acks.AckBatcher`).

    ``revoked`` (:class:`unimq.transport.SupportsRevocation`) turns true once that channel is
    closed (a reconnect, the broker closed it): the delivery can no longer be acked, and
    RabbitMQ has put the message back in its queue for redelivery, possibly to another consumer.
    """

    __slots__ = ("_acks", "_channel", "_tag", "body", "headers", "key", "native_id", "topic")

    def __init__(
        self,
        body: bytes,
        properties: Basic.Properties,
        topic: str,
        acks: AckBatcher | None,
        delivery_tag: int | None,
    ) -> None:
        self._acks = acks
        self._channel = acks.channel if acks is not None else None
        self._tag = delivery_tag
        self.topic = topic
        self.body = body
        raw = properties.headers or {}
        headers, key = wire_headers.decode(raw)
        if properties.content_type and h.CONTENT_TYPE not in headers:
            headers[h.CONTENT_TYPE] = properties.content_type
        message_id = properties.message_id
        self.native_id = message_id or _fingerprint(body, raw, properties.timestamp)
        if h.ID not in headers and message_id:
            headers[h.ID] = message_id  # unimq's id travels as the AMQP message_id
        self.headers: Mapping[str, str] = headers
        self.key = key

    @property
    def revoked(self) -> bool:
        channel = self._channel
        return channel is not None and bool(channel.is_closed)

    async def ack(self) -> None:
        self._queue_ack()

    @classmethod
    async def ack_many(cls, deliveries: Sequence[RabbitMQDelivery]) -> None:
        """``ack`` of each, in one call (:class:`unimq.transport.SupportsAckMany`). An ack only
        queues its tag on the channel's batcher, so this is what ``ack`` does, without an
        awaited call per delivery; more to the point, a batch subscriber's batch is then acked
        in one step, with no ``Settlement`` per message (before, the core settled each message
        of a RabbitMQ batch on its own, as for any delivery class without ``ack_many``)."""
        for delivery in deliveries:
            delivery._queue_ack()

    def _queue_ack(self) -> None:
        acks, tag = self._acks, self._tag
        if acks is None or tag is None:
            return
        self._acks = None  # acked once at most
        try:
            acks.ack(tag)
        except Exception as exc:  # channel gone (reconnect): RabbitMQ redelivers the message
            logger.warning("ack of %s failed (%s); RabbitMQ will redeliver it", self.native_id, exc)


class RabbitMQSubscription:
    """Consumes one queue through aiormq's ``basic_consume`` on a robust channel.

    Why not aio-pika's ``Queue.consume``: it wraps every delivery in an ``IncomingMessage``
    (about 30 attribute writes each), which cost about 12% of the consume path; the AMQP
    properties are all unimq needs. aio-pika still owns the connection and the channel: it
    reconnects, reopens the channel, restores its QoS and re-declares the queue, and
    ``_resume`` (a reopen callback) then consumes again on the new channel. Deliveries handed
    out before a reconnect fail to ack (logged) and RabbitMQ redelivers them.
    """

    def __init__(
        self, channel: AbstractChannel, queue: AbstractQueue, topic: str, prefetch: int
    ) -> None:
        self._channel = channel
        self._queue = queue
        self._topic = topic
        self._prefetch = prefetch  # the channel's QoS
        self._inbox: asyncio.Queue[aiormq.abc.DeliveredMessage | None] = asyncio.Queue()
        self._underlay: aiormq.abc.AbstractChannel | None = None
        self._acks: AckBatcher | None = None
        self._consumer_tag: str | None = None
        self._stopped = False

    async def start(self) -> None:
        await self._consume()
        reopened = getattr(self._channel, "reopen_callbacks", None)
        if reopened is not None:
            reopened.add(self._resume)

    async def _consume(self) -> None:
        underlay = await self._channel.get_underlay_channel()
        # Before the first delivery can arrive; told of every delivery (multiple acks).
        self._acks = AckBatcher(underlay, track=True)
        tag = await inline.consume(
            underlay, self._queue.name, self._delivered, prefetch=self._prefetch
        )
        self._underlay, self._consumer_tag = underlay, tag

    async def _resume(self, _channel: Any) -> None:
        if self._stopped:
            return
        try:
            await self._consume()
            logger.info("consuming %s again after a reconnect", self._queue.name)
        except Exception as exc:
            logger.error("could not resume consuming %s: %s", self._queue.name, exc)

    def _delivered(self, message: aiormq.abc.DeliveredMessage) -> None:
        """Called by the channel's reader for each delivery, in order (:mod:`.inline`)."""
        acks = self._acks
        if acks is not None and acks.channel is message.channel:
            acks.delivered(message.delivery.delivery_tag)  # type: ignore[union-attr,arg-type]
        self._inbox.put_nowait(message)  # bounded by the channel's prefetch

    async def receive(self) -> RabbitMQDelivery | None:
        if self._stopped:
            return None
        while True:
            message = await self._inbox.get()
            if message is None:
                self._inbox.put_nowait(None)  # wake the next waiting worker too
                return None
            if not message.channel.is_closed:
                break
            # Prefetched on a channel that has closed since (a reconnect): RabbitMQ has put it
            # back in the queue and redelivers it; handing it out would only run it twice.
        return self._delivery(message)

    def _delivery(self, message: aiormq.abc.DeliveredMessage) -> RabbitMQDelivery:
        return RabbitMQDelivery(
            message.body,
            message.header.properties,
            self._topic,
            self._acks_for(message.channel),
            message.delivery.delivery_tag,  # type: ignore[union-attr]  # always a Deliver here
        )

    async def receive_many(self, max_n: int) -> list[RabbitMQDelivery]:
        """Batch subscribers' ``receive``: wait for one delivery, then take what else the
        channel has already pushed (up to ``max_n``) without waiting; ``[]`` once stopped.
        One await per batch instead of one per message (``SupportsReceiveMany``)."""
        if self._stopped:
            return []
        inbox = self._inbox
        deliveries: list[RabbitMQDelivery] = []
        while not deliveries:
            message = await inbox.get()
            while True:
                if message is None:
                    inbox.put_nowait(None)  # wake the next waiting worker too
                    return deliveries
                if not message.channel.is_closed:  # else RabbitMQ redelivers it (see receive)
                    deliveries.append(self._delivery(message))
                if len(deliveries) >= max_n or inbox.empty():
                    break
                message = inbox.get_nowait()
        return deliveries

    def _acks_for(self, channel: aiormq.abc.AbstractChannel) -> AckBatcher:
        acks = self._acks
        if acks is not None and acks.channel is channel:
            return acks
        return AckBatcher(channel)  # delivered before a reconnect: that channel is gone

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        reopened = getattr(self._channel, "reopen_callbacks", None)
        if reopened is not None:
            reopened.discard(self._resume)
        underlay, tag = self._underlay, self._consumer_tag
        if underlay is not None and tag is not None and not underlay.is_closed:
            try:
                await underlay.basic_cancel(tag)
            except Exception as exc:
                logger.debug("cancelling consumer on %s: %s", self._queue.name, exc)
        if underlay is not None and tag is not None:
            inline.forget(underlay, tag)
        self._inbox.put_nowait(None)

    async def close(self) -> None:
        await self.stop()
        # Closing the channel returns every unacked delivery (prefetched or in a handler that
        # outlived the graceful timeout) to the queue.
        try:
            await self._channel.close()
        except Exception as exc:
            logger.debug("closing channel of %s: %s", self._queue.name, exc)


class RabbitMQTransport:
    capabilities = CAPABILITIES

    def __init__(
        self, url: BrokerURL, options: Mapping[str, Any], context: TransportContext
    ) -> None:
        self.url = url
        self.options = RabbitMQOptions.parse(url, options)
        stream = self.options.queue_type == "stream"
        self.capabilities = STREAM_CAPABILITIES if stream else CAPABILITIES
        # Ladder and holding queues need TTL and dead-lettering, which streams lack.
        self._durable_type: QueueType = "quorum" if stream else self.options.queue_type
        self._clock = context.clock
        self._connection_name = self.options.connection_name or f"unimq-{context.instance_id}"
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._window = Slots(self.options.publish_window)
        self._underlay: aiormq.abc.AbstractChannel | None = None
        self._batcher: ConfirmBatcher | None = None
        self._subscriptions: list[RabbitMQSubscription] = []
        self._declared: set[str] = set()

    async def connect(self) -> None:
        url = self.url
        options = self.options
        node_list = nodes.nodes_of(url)
        vhost = url.path[1:] if url.path.startswith("/") and len(url.path) > 1 else "/"
        external = options.auth_mechanism == "external"
        kwargs: dict[str, Any] = {
            "login": url.username or "guest",
            "password": url.password.get_secret_value() if url.password else "guest",
            "virtualhost": vhost,
            "client_properties": {"connection_name": self._connection_name},
            "reconnect_interval": options.reconnect_interval,
        }
        if external:
            kwargs["auth"] = "external"
        if options.heartbeat is not None:
            kwargs["heartbeat"] = options.heartbeat
        if url.scheme == "amqps":
            kwargs["ssl"] = True
            kwargs["ssl_context"] = options.ssl_context()
            if not options.verify_tls:
                logger.warning(
                    "TLS verification is off for %s (verify_tls=false): the server's "
                    "certificate and host name are not checked, so anyone on the path can "
                    "read and change the traffic",
                    url.redacted(),
                )
        try:
            with failures.quiet_connect_logs():
                self._connection = await nodes.connect_first(
                    node_list,
                    kwargs,
                    lambda exc: type(self._connect_error(exc)) is ConnectionFailedError,
                )
        except (aiormq.exceptions.AMQPError, OSError) as exc:
            error = self._connect_error(exc)
            if (
                type(error) is ConnectionFailedError
                and url.scheme == "amqp"
                and not failures.refused_connection(exc)
                and await failures.speaks_tls(*node_list[-1])
            ):
                error = failures.plaintext_on_tls_port(url)
            raise error from None
        self._publish_channel = await self._connection.channel(publisher_confirms=True)
        try:
            self._exchange = await topology.declare_exchanges(
                self._publish_channel, self._durable_type, self._connection
            )
        except aiormq.exceptions.ChannelAccessRefused as exc:
            raise self._refused(exc, "declare unimq's exchanges") from None
        except ConfigurationError:
            await self.close()  # a ladder queue of the other type: nothing can work
            raise
        self._use_channel(await self._publish_channel.get_underlay_channel())

    def _connect_error(self, exc: BaseException) -> UnimqError:
        return failures.connect_failure(
            exc,
            self.url,
            user=self._user(),
            mechanism=self.options.auth_mechanism,
            secrets=self._secrets(),
        )

    def _user(self) -> str:
        if self.options.auth_mechanism == "external":
            return "<client certificate>"
        return self.url.username or "guest"

    def _secrets(self) -> tuple[str, ...]:
        """What no message may show besides the URL's secrets: the key passphrase."""
        password = self.options.key_password
        return (password.get_secret_value(),) if password is not None else ()

    def _refused(self, exc: BaseException, action: str) -> UnimqError:
        """The typed error for an operation the broker refused (403 on the channel)."""
        refused = failures.access_refused(exc, self.url, self._user(), action)
        if refused is not None:
            return refused
        return ConnectionFailedError(
            f"RabbitMQ at {self.url.redacted()} failed to {action}: {_safe(exc, self.url)}"
        )

    async def close(self) -> None:
        for subscription in self._subscriptions:
            await subscription.close()
        self._subscriptions.clear()
        if self._connection is not None:
            connection, self._connection = self._connection, None
            try:
                await connection.close()
            except Exception as exc:
                logger.debug("closing the RabbitMQ connection: %s", exc)

    async def publish(self, message: OutgoingMessage) -> None:
        if self._exchange is None:
            raise NotConnectedError("the RabbitMQ transport is not connected")
        body, exchange_name, routing_key, properties = self._route(message)
        # One bound for the whole publish (a window slot, a lost channel, the confirm): a broker
        # that blocks publishers (memory or disk alarm) must not hold the caller forever.
        timeout = self.options.publish_timeout
        deadline = asyncio.get_running_loop().time() + timeout
        window = self._window
        if not window.take_now():
            try:
                await asyncio.wait_for(window.take(), timeout)
            except asyncio.TimeoutError:
                raise self._unconfirmed(message.topic) from None
        try:
            confirmation = await self._send(body, exchange_name, routing_key, properties, deadline)
        except asyncio.TimeoutError:
            raise self._unconfirmed(message.topic) from None
        except PublishError:
            raise
        except aiormq.exceptions.ChannelAccessRefused as exc:
            raise self._refused(exc, f"publish to topic {message.topic!r}") from None
        except Exception as exc:
            raise self._not_taken(message.topic, exc) from None
        finally:
            window.give()
        error = _verdict(message.topic, confirmation)
        if error is not None:
            raise error

    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> list[BaseException | None]:
        """``publish_batch``'s path (``SupportsPublishMany``): every message is queued on the
        confirm batcher as soon as a ``publish_window`` slot is free, with no task or wait per
        message, and the confirms are awaited together, so a batch keeps the window full and
        goes out in a few large writes. Each message has ``publish_timeout`` from the moment it
        was queued; per message the result is ``None`` (confirmed) or its ``PublishError``."""
        if self._exchange is None:
            raise NotConnectedError("the RabbitMQ transport is not connected")
        loop = asyncio.get_running_loop()
        timeout = self.options.publish_timeout
        window = self._window
        results: list[BaseException | None] = [None] * len(messages)
        pending: list[tuple[int, asyncio.Future[Any]]] = []
        release = _Release(window)
        try:
            for index, message in enumerate(messages):
                try:
                    body, exchange_name, routing_key, properties = self._route(message)
                except Exception as exc:  # EncodeError, a bad topic: this message only
                    results[index] = exc
                    continue
                if not window.take_now():
                    try:
                        await asyncio.wait_for(window.take(), timeout)
                    except asyncio.TimeoutError:
                        results[index] = self._unconfirmed(message.topic)
                        continue
                try:
                    confirmation = await self._queue(
                        body, exchange_name, routing_key, properties, loop.time() + timeout
                    )
                except Exception as exc:
                    window.give()
                    results[index] = (
                        exc
                        if isinstance(exc, PublishError)
                        else self._not_taken(message.topic, exc)
                    )
                    continue
                confirmation.add_done_callback(release)
                pending.append((index, confirmation))
            if pending:
                await asyncio.wait([c for _, c in pending], timeout=timeout)
        except asyncio.CancelledError:
            for _, confirmation in pending:
                confirmation.cancel()  # withdrawn if not yet written
            raise
        for index, confirmation in pending:
            topic = messages[index].topic
            if not confirmation.done():
                confirmation.cancel()
                results[index] = self._unconfirmed(topic)
            elif confirmation.cancelled():
                results[index] = PublishError(
                    f"the channel closed before RabbitMQ confirmed the message for {topic!r}"
                )
            elif (error := confirmation.exception()) is not None:
                results[index] = self._failure(topic, error)
            else:
                results[index] = _verdict(topic, confirmation.result())
        return results

    def _route(self, message: OutgoingMessage) -> tuple[bytes, str, str, Basic.Properties]:
        """Body, exchange, routing key and properties of ``message`` (delays go through the
        delay exchanges)."""
        topology.check_name("topic", message.topic)
        headers, content_type = wire_headers.encode(message)
        properties = Basic.Properties(
            delivery_mode=2,  # persistent
            message_id=message.message_id,
            content_type=content_type,
            headers=headers,
        )
        exchange_name = topology.MAIN_EXCHANGE
        routing_key = message.topic
        delay = 0
        if message.deliver_at is not None:
            # Whole seconds, rounded down: the core holds a delivery that is under 2 s early
            # until it is due, so rounding down is never late and never early.
            delay = min(
                math.floor(message.deliver_at - self._clock.now()), topology.MAX_DELAY_SECONDS
            )
        if delay >= 1:
            exchange_name = topology.level_name(topology.LEVELS - 1)
            routing_key = topology.delay_routing_key(delay, message.topic)
        return message.body, exchange_name, routing_key, properties

    def _failure(self, topic: str, error: BaseException) -> BaseException:
        """``publish_many``'s error for one message."""
        if isinstance(error, PublishError):
            return error
        if isinstance(error, aiormq.exceptions.ChannelAccessRefused):
            return self._refused(error, f"publish to topic {topic!r}")
        return self._not_taken(topic, error)

    def _not_taken(self, topic: str, error: BaseException) -> PublishError:
        return PublishError(
            f"RabbitMQ did not take the message for {topic!r}: {_safe(error, self.url)}"
        )

    def _unconfirmed(self, topic: str) -> PublishError:
        timeout = self.options.publish_timeout
        return PublishError(
            f"RabbitMQ did not confirm the message for {topic!r} within {timeout:g}s "
            "(publish_timeout); it may or may not be stored. A broker that blocks publishers "
            "(memory or disk alarm) does this; publishing again may duplicate the message"
        )

    async def _send(
        self,
        body: bytes,
        exchange: str,
        routing_key: str,
        properties: Basic.Properties,
        deadline: float,
    ) -> Any:
        """Publish on the current channel and wait for RabbitMQ's answer: ``Basic.Ack``, the
        returned message (unroutable), or an exception (nack, channel lost); raises
        ``asyncio.TimeoutError`` when there is none by ``deadline`` (loop time)."""
        loop = asyncio.get_running_loop()
        confirmation = await self._queue(body, exchange, routing_key, properties, deadline)
        # A timer rather than asyncio.wait_for, which costs a task switch and three objects
        # more per publish: expiring cancels the confirmation (withdrawn if not yet written;
        # if written, aiormq ignores the late confirm of a cancelled one).
        expiry = _Expiry(confirmation)
        timer = loop.call_at(deadline, expiry)
        try:
            # Shielded so that a cancelled caller can be told apart from a closed channel,
            # which rejects its pending confirmations with a CancelledError of their own.
            return await asyncio.shield(confirmation)
        except asyncio.CancelledError:
            if not confirmation.done():
                confirmation.cancel()  # our caller is cancelled: withdraw it if not yet sent
                raise
            if expiry.expired:
                raise asyncio.TimeoutError from None
            raise aiormq.exceptions.ChannelInvalidStateError(
                "the channel closed before RabbitMQ confirmed the message"
            ) from None
        finally:
            timer.cancel()

    async def _queue(
        self,
        body: bytes,
        exchange: str,
        routing_key: str,
        properties: Basic.Properties,
        deadline: float,
    ) -> asyncio.Future[Any]:
        """Queue one publish on the current channel; the future is RabbitMQ's answer."""
        loop = asyncio.get_running_loop()
        channel = self._underlay
        if channel is None or channel.is_closed:
            channel = await self._reacquire_channel(max(deadline - loop.time(), 0.0))
        batcher = self._batcher
        if batcher is None:  # an aiormq without the attributes the batcher relies on
            return asyncio.ensure_future(
                asyncio.wait_for(
                    channel.basic_publish(
                        body,
                        exchange=exchange,
                        routing_key=routing_key,
                        properties=properties,
                        mandatory=True,
                    ),
                    max(deadline - loop.time(), 0.0),
                )
            )
        return batcher.publish(
            body, exchange=exchange, routing_key=routing_key, properties=properties, mandatory=True
        )

    async def _reacquire_channel(self, wait: float) -> aiormq.abc.AbstractChannel:
        """The publish channel's current AMQP channel, waiting up to ``wait`` seconds for a
        reconnect."""
        robust = self._publish_channel
        if robust is None or self._connection is None:  # never connected, or closed
            raise NotConnectedError("the RabbitMQ transport is not connected")
        try:
            channel = await asyncio.wait_for(_reopened(robust), wait)
        except asyncio.TimeoutError:
            raise PublishError(
                f"RabbitMQ at {self.url.redacted()} is unreachable: no connection within "
                f"{self.options.publish_timeout:g}s (publish_timeout)"
            ) from None
        self._use_channel(channel)
        return channel

    def _use_channel(self, channel: aiormq.abc.AbstractChannel) -> None:
        """Publish on ``channel`` from now on, through a batcher of its own when this aiormq
        has what :mod:`.confirms` relies on (decided once per channel, not per publish).

        Concurrent publishes may each reacquire the same channel: it keeps its one batcher,
        since two batchers on one channel could write frames out of delivery-tag order."""
        if channel is self._underlay:
            return
        self._underlay = channel
        self._batcher = ConfirmBatcher(channel) if confirms.supported(channel) else None

    async def subscribe(self, spec: SubscriptionSpec) -> RabbitMQSubscription:
        connection = self._connection
        if connection is None:
            raise NotConnectedError("the RabbitMQ transport is not connected")
        topology.check_name("topic", spec.topic)
        topology.check_name("group", spec.group)
        channel = await connection.channel()
        try:
            await channel.set_qos(prefetch_count=spec.prefetch)
            queue = await topology.declare_group_queue(
                channel,
                spec.topic,
                spec.group,
                ordered=spec.ordered,
                broadcast=spec.broadcast,
                queue_type=self.options.queue_type,
                connection=connection,
            )
            subscription = self._subscription(channel, queue, spec)
            await subscription.start()
        except aiormq.exceptions.ChannelAccessRefused as exc:
            await topology.close_quietly(channel)
            action = f"subscribe group {spec.group!r} to topic {spec.topic!r}"
            raise self._refused(exc, action) from None
        except ConfigurationError:
            await topology.close_quietly(channel)
            raise
        self._subscriptions.append(subscription)
        return subscription

    def _subscription(
        self, channel: AbstractChannel, queue: AbstractQueue, spec: SubscriptionSpec
    ) -> RabbitMQSubscription:
        if self.options.queue_type == "stream" and not spec.broadcast:
            from .stream import StreamSubscription  # that module builds on this one

            assert self._connection is not None
            return StreamSubscription(channel, queue, spec.topic, spec.prefetch, self._connection)
        return RabbitMQSubscription(channel, queue, spec.topic, spec.prefetch)

    async def declare_topic(self, topic: str) -> None:
        channel = self._publish_channel
        if channel is None:
            raise NotConnectedError("the RabbitMQ transport is not connected")
        if topic in self._declared:
            return
        topology.check_name("topic", topic)
        try:
            await topology.declare_holding_queue(
                channel, topic, self._durable_type, self._connection
            )
        except aiormq.exceptions.ChannelAccessRefused as exc:
            raise self._refused(exc, f"declare the dead-letter topic {topic!r}") from None
        self._declared.add(topic)

    async def lag(self, topic: str, group: str) -> int | None:
        """Ready messages in the group's queue (unacked ones are not counted); ``None`` when
        the queue does not exist. Waits up to ``publish_timeout`` for a lost connection."""
        connection = self._connection
        if connection is None:
            raise NotConnectedError("the RabbitMQ transport is not connected")
        topology.check_name("topic", topic)
        topology.check_name("group", group)
        if self.options.queue_type == "stream":
            from . import stream_rewind

            return await stream_rewind.lag(connection, topic, group, self.options.publish_timeout)
        queue = topology.group_queue(topic, group)
        return await topology.ready_count(connection, queue, self.options.publish_timeout)

    async def backlog_age(self, topic: str, group: str) -> float | None:
        """Stream groups: the age of the message at the group's committed offset
        (:mod:`.stream_rewind`). ``None`` (unknown) on classic and quorum queues, whose head
        message can only be seen by taking it, which would redeliver it out of order."""
        connection = self._connection
        if connection is None:
            raise NotConnectedError("the RabbitMQ transport is not connected")
        if self.options.queue_type != "stream":
            return None
        topology.check_name("topic", topic)
        topology.check_name("group", group)
        from . import stream_rewind

        return await stream_rewind.backlog_age(
            connection, topic, group, self.options.publish_timeout, self._clock.now()
        )

    async def rewind(
        self, topic: str, group: str, since: float, *, dry_run: bool = False
    ) -> int | None:
        """Move a stream group back to ``since`` (:mod:`.stream_rewind`); refused with
        ``UnsupportedFeatureError`` unless ``queue_type=stream``: a classic or quorum queue
        deletes what it delivered."""
        if self.options.queue_type != "stream":
            raise UnsupportedFeatureError(
                f"RabbitMQ cannot rewind group {group!r}: with queue_type="
                f"{self.options.queue_type!r} its queue deletes what it delivered. Only stream "
                "queues keep it (queue_type=stream, docs/backends/rabbitmq.md)"
            )
        connection = self._connection
        if connection is None:
            raise NotConnectedError("the RabbitMQ transport is not connected")
        topology.check_name("topic", topic)
        topology.check_name("group", group)
        from . import stream_rewind

        return await stream_rewind.rewind(
            connection, topic, group, since, dry_run=dry_run, wait=self.options.publish_timeout
        )

    async def open_dead_letters(self, topic: str) -> RabbitMQDeadLetters:
        """A pass over the holding queue of dead-letter ``topic`` (see :mod:`.dead_letters`)."""
        from .dead_letters import RabbitMQDeadLetters  # that module builds on this one

        connection = self._connection
        if connection is None:
            raise NotConnectedError("the RabbitMQ transport is not connected")
        topology.check_name("topic", topic)
        return await RabbitMQDeadLetters.open(connection, topic, self.options.publish_timeout)


def _verdict(topic: str, confirmation: Any) -> PublishError | None:
    """``None`` for RabbitMQ's ``Basic.Ack``; the error for a nack or a returned message."""
    if isinstance(confirmation, Basic.Ack):
        return None
    if isinstance(confirmation, Basic.Nack):
        return PublishError(f"RabbitMQ rejected the message for {topic!r} (nack)")
    return PublishError(
        f"no queue is bound to topic {topic!r} on RabbitMQ, so the message was returned "
        "unroutable; start a subscriber for it first (subscribers declare their queues)"
    )


class _Release:
    """Gives a ``publish_window`` slot back when a confirmation of ``publish_many`` ends."""

    __slots__ = ("window",)

    def __init__(self, window: Slots) -> None:
        self.window = window

    def __call__(self, _confirmation: asyncio.Future[Any]) -> None:
        self.window.give()


async def _reopened(channel: AbstractChannel) -> aiormq.abc.AbstractChannel:
    """The robust channel's AMQP channel once it is open: one the broker closed (a refused
    publish) is being reopened by aio-pika, and ``get_underlay_channel`` alone would fail on
    the closed one instead of waiting."""
    ready = getattr(channel, "ready", None)
    while True:
        if ready is not None:
            await ready()
        try:
            underlay = await channel.get_underlay_channel()
        except aiormq.exceptions.ChannelInvalidStateError:
            underlay = None
        if underlay is not None and not underlay.is_closed:
            return underlay
        # still the closed one: aio-pika has not noticed yet (its close callback runs later)
        # or is reopening it. Poll; the caller's timeout bounds the wait.
        await asyncio.sleep(0.05)


class _Expiry:
    """Cancels a confirmation that is still pending at the publish's deadline, and says so."""

    __slots__ = ("confirmation", "expired")

    def __init__(self, confirmation: asyncio.Future[Any]) -> None:
        self.confirmation = confirmation
        self.expired = False

    def __call__(self) -> None:
        if not self.confirmation.done():
            self.expired = True
            self.confirmation.cancel()


def _fingerprint(body: bytes, headers: Mapping[str, Any], timestamp: Any) -> str:
    """An id for messages published without one (other clients): stable across redeliveries."""
    digest = hashlib.sha256(body)
    digest.update(repr(sorted(headers.items())).encode())
    digest.update(str(timestamp).encode())
    return f"amqp-{digest.hexdigest()[:32]}"


def _safe(error: BaseException, url: BrokerURL) -> str:
    return url.mask(f"{type(error).__name__}: {error}")
