"""``rocketmq://proxy:8081``: unimq on RocketMQ 5 through its gRPC proxy.

The official client (``rocketmq-python-client``) is thread-based: its calls either block or
return ``concurrent.futures`` futures resolved on its own threads. This transport only ever
awaits those futures (``asyncio.wrap_future``) or runs the blocking calls (startup, shutdown,
the first route lookup of a topic) in a worker thread, so the event loop never blocks.

What lives where: names (``names``), message mapping (``codec``), receive/ack (``consumer``),
topic and group creation (``provisioning`` over ``remoting``), backlog and offsets over the
admin protocol (``admin``), dead-letter sessions (``dead_letters``), options (``options``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Mapping
from typing import Any

from unimq.errors import (
    AuthenticationError,
    BrokerUnreachableError,
    ConfigurationError,
    ConnectionFailedError,
    NotConnectedError,
    PublishError,
    UnsupportedFeatureError,
)
from unimq.transport import Capabilities, OutgoingMessage, SubscriptionSpec, TransportContext
from unimq.url import BrokerURL

from . import codec, dead_letters, names, remoting
from .admin import RemotingAdmin, pop_retry_topics
from .codec import MAX_BODY_WITH_HEADERS
from .consumer import RocketMQSubscription, start_consumer
from .options import RocketMQOptions
from .provisioning import ProvisionCache, RemotingProvisioner

logger = logging.getLogger("unimq.rocketmq")

_FIFO = 2  # rocketmq.grpc_protocol.MessageType.FIFO
_AUTH_MARKS = ("unauthorized", "forbidden", "40100", "40300", "signature", "access key")
_ROUTE_TTL = 30.0


class RocketMQTransport:
    def __init__(
        self, url: BrokerURL, options: Mapping[str, Any], context: TransportContext
    ) -> None:
        self.url = url
        self.options = RocketMQOptions.parse(url, options)
        self.context = context
        self.capabilities = Capabilities(
            max_delay=self.options.max_delay,
            ordering=True,
            broadcast=True,
            durable=True,
            max_message_size=MAX_BODY_WITH_HEADERS,
            # Invisibility is renewed while a delivery is held; one that lapsed says so.
            revocable=True,
        )
        provisioner = self.options.provisioner
        if provisioner is None and self.options.auto_provision:
            provisioner = RemotingProvisioner(
                namesrv=self.options.namesrv,
                broker_addresses=self.options.broker_addresses,
                cluster=self.options.cluster,
                queues=self.options.queues,
            )
        self._provision = ProvisionCache(provisioner)
        self._admin: RemotingAdmin | None = None
        if isinstance(provisioner, RemotingProvisioner):
            self._admin = provisioner.admin
        elif self.options.namesrv or self.options.broker_addresses:
            self._admin = RemotingAdmin(
                namesrv=self.options.namesrv,
                broker_addresses=self.options.broker_addresses,
                cluster=self.options.cluster,
            )
        self._known_groups: set[tuple[str, str]] = set()
        self._dead_letter_topics: set[str] = set()
        self._producer: Any = None
        self._config: Any = None
        self._subscriptions: list[RocketMQSubscription] = []
        self._fifo: dict[str, tuple[bool, float]] = {}
        self._producer_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"RocketMQTransport({self.url.redacted()!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    async def connect(self) -> None:
        import rocketmq

        await self._check_reachable()
        options = self.options
        credentials = rocketmq.Credentials(
            options.access_key, options.secret_key.get_secret_value()
        )
        self._config = rocketmq.ClientConfiguration(
            options.endpoints, credentials, options.namespace, options.request_timeout
        )
        try:
            self._producer = await asyncio.to_thread(self._start_producer)
        except Exception as exc:
            raise self._connect_error(exc) from None

    def _start_producer(self) -> Any:
        import rocketmq

        producer = rocketmq.Producer(self._config, tls_enable=self.options.tls)
        producer.startup()
        return producer

    async def _restart_producer(self, broken: Any) -> None:
        """A restarted proxy forgets the client's settings (40015) and client 5.1.2 never
        sends them again: replace the producer (once, however many publishes noticed)."""
        async with self._producer_lock:
            if self._producer is not broken:
                return
            logger.warning("restarting the RocketMQ producer for %s", self.url.redacted())
            self._producer = await asyncio.to_thread(self._start_producer)
        asyncio.get_running_loop().run_in_executor(None, _shutdown_quietly, broken)

    async def _check_reachable(self) -> None:
        """Fail fast with a clear error: the gRPC channel itself connects lazily."""
        errors: list[str] = []
        for address in self.options.endpoints.split(";"):
            host, _, port = address.rpartition(":")
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 10)
            except (OSError, asyncio.TimeoutError) as exc:
                errors.append(f"{address}: {exc!r}")
                continue
            writer.close()
            return
        raise BrokerUnreachableError(
            f"cannot reach the RocketMQ proxy of {self.url.redacted()}: {'; '.join(errors)}"
        )

    def _connect_error(self, exc: BaseException) -> ConnectionFailedError:
        text = f"{type(exc).__name__}: {exc}"
        if any(mark in text.lower() for mark in _AUTH_MARKS):
            return AuthenticationError(
                f"RocketMQ at {self.url.redacted()} refused the credentials: {text}"
            )
        return ConnectionFailedError(f"cannot connect to RocketMQ at {self.url.redacted()}: {text}")

    async def close(self) -> None:
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            await subscription.close()
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await asyncio.to_thread(producer.shutdown)
            except Exception as exc:
                logger.debug("producer shutdown: %s", exc)

    # -- provisioning ------------------------------------------------------------------------

    def _resource(self, physical: str) -> str:
        """The broker-side name: RocketMQ 5 stores namespaced resources as ``ns%name``."""
        namespace = self.options.namespace
        return f"{namespace}%{physical}" if namespace else physical

    async def _ensure_topic(self, physical: str, message_type: str) -> None:
        if self._provision.enabled:
            await self._provision.ensure(
                "topic", self._resource(physical), message_type=message_type
            )

    async def declare_topic(self, topic: str) -> None:
        """Dead-letter topics: provisioned so a dead letter is never refused for want of one,
        and readable from their first letter by the ``unimq-dlq`` group (``dead_letters``)."""
        physical = names.topic_name(topic)
        await self._ensure_topic(physical, self.options.topic_message_type)
        await self._prepare_dead_letters(physical, strict=False)

    async def _prepare_dead_letters(self, physical: str, *, strict: bool) -> None:
        """The ``unimq-dlq`` group (when provisioning) and its offsets on the topic: unset ones
        start at the earliest letter. Once per topic; ``strict=False`` only logs admin errors
        (a subscriber must not fail to start for want of the admin port)."""
        group = self._resource(names.group_name(dead_letters.GROUP))
        if self._provision.enabled:
            await self._provision.ensure(
                "group", group, orderly=False, retry_max_times=dead_letters.GROUP_RETRY_MAX_TIMES
            )
        admin = self._admin
        if admin is None or physical in self._dead_letter_topics:
            return
        try:
            await admin.start_at_earliest(group, self._resource(physical))
        except remoting.RemotingError as exc:
            if strict:
                raise ConnectionFailedError(
                    f"cannot set up the dead-letter group {group!r} on {physical!r}: {exc}"
                ) from None
            logger.warning("dead-letter group %r on %r not set up yet: %s", group, physical, exc)
            return
        self._dead_letter_topics.add(physical)

    # -- publishing --------------------------------------------------------------------------

    async def publish(self, message: OutgoingMessage) -> None:
        producer = self._producer
        if producer is None:
            raise NotConnectedError("the RocketMQ transport is not connected")
        physical = names.topic_name(message.topic)
        try:
            await self._ensure_topic(physical, self.options.topic_message_type)
            fifo = await self._is_fifo(physical)
            outgoing = codec.to_rocketmq(
                message, physical, fifo=fifo, mixed=self.options.topic_message_type == "MIXED"
            )
            try:
                await asyncio.wrap_future(producer.send_async(outgoing))
            except Exception as exc:
                if not _is_stale_client(exc):
                    raise
                await self._restart_producer(producer)
                outgoing = codec.to_rocketmq(
                    message, physical, fifo=fifo, mixed=self.options.topic_message_type == "MIXED"
                )
                await asyncio.wrap_future(self._producer.send_async(outgoing))
        except PublishError:
            raise
        except Exception as exc:
            raise PublishError(
                f"RocketMQ did not accept a message for {message.topic!r} "
                f"(topic {physical!r}): {type(exc).__name__}: {exc}"
            ) from None

    async def _is_fifo(self, physical: str) -> bool:
        """Whether the topic takes FIFO messages (from its route, looked up off the loop)."""
        known = self._fifo.get(physical)
        now = time.monotonic()
        if known is not None and now - known[1] < _ROUTE_TTL:
            return known[0]
        route = await asyncio.to_thread(self._producer._retrieve_topic_route_data, physical)
        fifo = any(
            _FIFO in queue.accept_message_types and len(queue.accept_message_types) == 1
            for queue in route.message_queues
        )
        self._fifo[physical] = (fifo, now)
        return fifo

    # -- consuming ---------------------------------------------------------------------------

    async def subscribe(self, spec: SubscriptionSpec) -> RocketMQSubscription:
        if self._config is None:
            raise NotConnectedError("the RocketMQ transport is not connected")
        physical = names.topic_name(spec.topic)
        group = spec.group
        if spec.broadcast:
            # SimpleConsumer has no broadcasting mode: every instance gets its own group.
            group = f"{group}@{self.context.instance_id}"
        physical_group = names.group_name(group)
        # Ordered subscriptions read a FIFO topic; their retry topic only carries delay
        # re-hops (ordered retries happen in place), so it stays a delay topic.
        fifo = spec.ordered and spec.role == "main"
        await self._ensure_topic(physical, "FIFO" if fifo else self.options.topic_message_type)
        if self._provision.enabled:
            await self._provision.ensure(
                "group", self._resource(physical_group), orderly=spec.ordered
            )
        options = self.options
        start = functools.partial(
            start_consumer,
            self._config,
            physical_group,
            physical,
            await_duration=options.await_duration,
            tls=options.tls,
        )
        try:
            consumer = await asyncio.to_thread(start)
        except Exception as exc:
            raise ConnectionFailedError(
                f"cannot consume {spec.topic!r} (RocketMQ topic {physical!r}, group "
                f"{physical_group!r}) from {self.url.redacted()}: {type(exc).__name__}: {exc}. "
                "The topic and group must exist: create them (see docs/backends/rocketmq.md) "
                "or set auto_provision=true with namesrv=host:port"
            ) from None
        subscription = RocketMQSubscription(
            consumer,
            start,
            spec,
            invisible_duration=options.invisible_duration,
            batch_size=options.batch_size,
            release_delay=options.release_delay,
        )
        subscription.start()
        self._subscriptions.append(subscription)
        return subscription

    # -- operations --------------------------------------------------------------------------

    async def lag(self, topic: str, group: str) -> int | None:
        """``group``'s backlog on ``topic``: over every master broker and queue, broker offset
        minus consumer offset, on the topic and on the group's pop retry topics (see
        ``admin``). Messages received and not acked yet are not counted (a receive moves the
        offset at once). ``None`` without the admin protocol (``namesrv=`` or
        ``broker_addresses=``), for an unknown topic or group, or when the brokers cannot be
        asked."""
        admin = self._admin
        if admin is None:
            return None
        physical_topic = self._resource(names.topic_name(topic))
        physical_group = self._resource(names.group_name(group))
        try:
            known = (physical_group, physical_topic) in self._known_groups
            if not known and not await admin.knows_group(physical_group, physical_topic):
                return None
            self._known_groups.add((physical_group, physical_topic))
            return await admin.backlog(physical_group, physical_topic)
        except remoting.RemotingError as exc:
            logger.warning("cannot read the lag of %r on %r: %s", group, topic, exc)
            return None

    async def open_dead_letters(self, topic: str) -> dead_letters.RocketMQDeadLetters:
        """A pass over dead-letter ``topic`` through the ``unimq-dlq`` group (``dead_letters``);
        needs the admin protocol (``namesrv=`` or ``broker_addresses=``) to count letters and
        to start the group at the earliest one."""
        if self._config is None:
            raise NotConnectedError("the RocketMQ transport is not connected")
        admin = self._admin
        if admin is None:
            raise UnsupportedFeatureError(
                "browsing RocketMQ dead-letter topics needs the brokers' admin protocol: set "
                "namesrv=host:9876 (or broker_addresses=host:10911)"
            )
        physical = names.topic_name(topic)
        group = names.group_name(dead_letters.GROUP)
        retry = pop_retry_topics(self._resource(physical), self._resource(group))[0]
        if len(retry) > names.MAX_TOPIC:
            raise ConfigurationError(
                f"dead-letter topic {topic!r} (RocketMQ {physical!r}) is too long to browse: "
                f"the broker would give letters back through {retry!r}, over "
                f"{names.MAX_TOPIC} characters"
            )
        await self._ensure_topic(physical, self.options.topic_message_type)
        await self._prepare_dead_letters(physical, strict=True)
        return dead_letters.RocketMQDeadLetters(
            topic,
            physical_topic=self._resource(physical),
            group=self._resource(group),
            admin=admin,
            start=functools.partial(
                start_consumer,
                self._config,
                group,
                physical,
                await_duration=self.options.await_duration,
                tls=self.options.tls,
            ),
        )


def _is_stale_client(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "40015" in text or "client settings" in text or "settings is null" in text


def _shutdown_quietly(client: Any) -> None:
    try:
        client.shutdown()
    except Exception as exc:
        logger.debug("client shutdown: %s", exc)
