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
import inspect
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from unimq.errors import (
    AuthenticationError,
    BrokerUnreachableError,
    ConfigurationError,
    ConnectionFailedError,
    NotConnectedError,
    PublishError,
    UnimqError,
    UnsupportedFeatureError,
)
from unimq.transport import Capabilities, OutgoingMessage, SubscriptionSpec, TransportContext
from unimq.url import BrokerURL

from . import access, codec, dead_letters, names, remoting, transactions
from . import rewind as rewinding
from . import tls as tls_setup
from .admin import RemotingAdmin, pop_retry_topics
from .codec import MAX_BODY_WITH_HEADERS
from .consumer import RocketMQSubscription, start_consumer
from .options import RocketMQOptions
from .provisioning import ProvisionCache, RemotingProvisioner

logger = logging.getLogger("unimq.rocketmq")

_FIFO = 2  # rocketmq.grpc_protocol.MessageType.FIFO
_AUTH_MARKS = ("unauthorized", "forbidden", "40100", "40300", "signature", "access key")
_ROUTE_TTL = 30.0
#: A topic name nobody creates: its route query only tests the credentials.
_CREDENTIALS_PROBE = "unimq-credentials-check"
#: How long a topic turned TRANSACTION on first use may take to show so in its route.
_RETYPE_WAIT = 15.0


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
            # Half messages: one per transaction (the client's limit), checked back through
            # ``Broker(transaction_checker=)`` when the producer vanished (``transactions``).
            transactions=True,
            max_transaction_messages=1,
            # Reset offset by time over the admin protocol (rewind.py; needs namesrv= or
            # broker_addresses=, refused clearly without).
            rewind=True,
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
        #: Physical names of the topics declared with ``transaction_topics``.
        self._transaction_topics = {names.topic_name(t) for t in self.options.transaction_topics}
        self._accepts_transactions: set[str] = set()
        self._checker = transactions.CheckBridge(
            context.check_transaction, self.options.transaction_check_timeout
        )

    def __repr__(self) -> str:
        return f"RocketMQTransport({self.url.redacted()!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    async def connect(self) -> None:
        import rocketmq

        await self._check_reachable()
        self._checker.bind(asyncio.get_running_loop())
        for physical in sorted(self._transaction_topics):
            await self._ensure_topic(physical, self.options.topic_message_type)
        options = self.options
        shown = self.url.redacted()
        if options.tls:
            preflight = functools.partial(
                tls_setup.preflight,
                options.endpoints,
                ca_file=options.tls_ca_file,
                timeout=2.0,
                url=shown,
            )
            await asyncio.to_thread(preflight)
            if options.tls_ca_file:
                tls_setup.use_ca_file(options.tls_ca_file)
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
        if options.tls:
            tls_setup.freeze()
        await self._check_credentials()

    async def _check_credentials(self) -> None:
        """One signed route query: a refused access or secret key fails the connect, not the
        first publish (the client connects lazily and words a refusal as "no route")."""
        try:
            code, text = await asyncio.to_thread(
                access.route_status,
                self._producer,
                _CREDENTIALS_PROBE,
                float(self.options.request_timeout),
            )
        except Exception as exc:  # the channel itself failed: TLS on one side only?
            explain = functools.partial(
                tls_setup.explain,
                self.options.endpoints,
                tls=self.options.tls,
                ca_file=self.options.tls_ca_file,
                url=self.url.redacted(),
            )
            failure = await asyncio.to_thread(explain)
            await self.close()
            raise (failure or self._connect_error(exc)) from None
        refused = access.refusal(code, text, access_key=self.options.access_key, action="")
        if isinstance(refused, AuthenticationError):
            await self.close()
            raise refused

    async def _refusal(
        self, check: Callable[..., tuple[int, str]], *args: Any, action: str
    ) -> UnimqError | None:
        """Ask the proxy whether its ACL refuses ``action`` (after a failure, or up front)."""
        producer = self._producer
        if producer is None:
            return None
        try:
            ask = functools.partial(check, producer, *args, float(self.options.request_timeout))
            code, text = await asyncio.to_thread(ask)
        except Exception:  # no answer: let the caller report its own failure
            return None
        return access.refusal(code, text, access_key=self.options.access_key, action=action)

    def _start_producer(self) -> Any:
        import rocketmq

        # Declaring the transactional topics up front tells the proxy that this producer can
        # answer check-backs for their orphaned half messages, even before it publishes.
        producer = rocketmq.Producer(
            self._config,
            topics=sorted(self._transaction_topics) or None,
            checker=self._checker,
            tls_enable=self.options.tls,
        )
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
        if physical in self._transaction_topics and message_type != "MIXED":
            # Declared transactional: RocketMQ 5 topics take one message type, and half
            # messages need TRANSACTION (MIXED takes every type, where the broker allows it).
            message_type = "TRANSACTION"
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
        if physical in self._transaction_topics and self.options.topic_message_type != "MIXED":
            await self._publish_committed(message)
            return
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
            refused = await self._refusal(
                access.route_status,
                physical,
                action=f"publish to topic {message.topic!r} (RocketMQ topic {physical!r})",
            )
            if refused is not None:
                raise refused from None
            raise PublishError(
                f"RocketMQ did not accept a message for {message.topic!r} "
                f"(topic {physical!r}): {type(exc).__name__}: {exc}"
            ) from None

    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> list[BaseException | None]:
        """``publish_batch``'s path (``SupportsPublishMany``): every message is handed to the
        client's send threads at once (``send_async``), with one check of each topic and one
        coroutine per key rather than per message, and the receipts are awaited together.
        Messages with the same key are sent one after the other (parallel sends of one key
        could overtake each other); a stale client is restarted and its messages sent once
        more through :meth:`publish`."""
        producer = self._producer
        if producer is None:
            raise NotConnectedError("the RocketMQ transport is not connected")
        mixed = self.options.topic_message_type == "MIXED"
        fifo_of: dict[str, bool] = {}
        results: list[BaseException | None] = [None] * len(messages)
        alone: list[int] = []
        chains: dict[str, list[int]] = {}
        outgoing: list[Any] = [None] * len(messages)
        refusals: dict[str, BaseException | None] = {}  # one refusal check per topic

        async def failure(message: OutgoingMessage, physical: str, exc: BaseException) -> Any:
            if isinstance(exc, UnimqError):  # publish's own typed errors
                return exc
            if physical not in refusals:
                refusals[physical] = await self._refusal(
                    access.route_status,
                    physical,
                    action=f"publish to topic {message.topic!r} (RocketMQ topic {physical!r})",
                )
            return refusals[physical] or self._not_accepted(message, physical, exc)

        for index, message in enumerate(messages):
            physical = names.topic_name(message.topic)
            if physical in self._transaction_topics and not mixed:
                alone.append(index)  # committed through a transaction: publish() does it
                continue
            try:
                fifo = fifo_of.get(physical)
                if fifo is None:
                    await self._ensure_topic(physical, self.options.topic_message_type)
                    fifo = fifo_of[physical] = await self._is_fifo(physical)
                outgoing[index] = codec.to_rocketmq(message, physical, fifo=fifo, mixed=mixed)
            except Exception as exc:
                results[index] = await failure(message, physical, exc)
                continue
            if message.key is None:
                alone.append(index)
            else:
                chains.setdefault(message.key, []).append(index)

        async def one(index: int) -> None:
            message = messages[index]
            try:
                if outgoing[index] is None:
                    await self.publish(message)
                else:
                    await asyncio.wrap_future(producer.send_async(outgoing[index]))
            except Exception as exc:
                if outgoing[index] is not None and _is_stale_client(exc):
                    try:
                        await self.publish(message)  # restarts the producer, sends again
                        return
                    except Exception as again:
                        exc = again
                results[index] = await failure(message, names.topic_name(message.topic), exc)

        async def chain(indexes: list[int]) -> None:
            for index in indexes:
                await one(index)

        futures = [asyncio.ensure_future(one(index)) for index in alone]
        futures += [asyncio.ensure_future(chain(indexes)) for indexes in chains.values()]
        if futures:
            await asyncio.gather(*futures)
        return results

    @staticmethod
    def _not_accepted(message: OutgoingMessage, physical: str, exc: BaseException) -> BaseException:
        if isinstance(exc, PublishError):
            return exc
        return PublishError(
            f"RocketMQ did not accept a message for {message.topic!r} "
            f"(topic {physical!r}): {type(exc).__name__}: {exc}"
        )

    async def _is_fifo(self, physical: str) -> bool:
        """Whether the topic takes FIFO messages (from its route, looked up off the loop)."""
        known = self._fifo.get(physical)
        now = time.monotonic()
        if known is not None and now - known[1] < _ROUTE_TTL:
            return known[0]
        route = await route_with_retries(self._producer._retrieve_topic_route_data, physical)
        fifo = any(
            _FIFO in queue.accept_message_types and len(queue.accept_message_types) == 1
            for queue in route.message_queues
        )
        self._fifo[physical] = (fifo, now)
        return fifo

    async def _publish_committed(self, message: OutgoingMessage) -> None:
        """A plain publish to a transactional topic, which takes only half messages: one half
        message committed at once. Marked, so that a check-back for it (this process died
        between the two) commits it without asking the application's checker."""
        if message.deliver_at is not None:
            raise UnsupportedFeatureError(
                f"topic {message.topic!r} is transactional (transaction_topics): RocketMQ half "
                "messages cannot carry a delivery time, so it takes no delayed message"
            )
        transaction = await self.begin_transaction()
        await transaction.publish(message, autocommit=True)
        await transaction.commit()

    # -- transactions ------------------------------------------------------------------------

    async def begin_transaction(self) -> transactions.RocketMQTransaction:
        """A client transaction on the current producer; its half message and its end go
        through that producer even if a restart replaces it meanwhile."""
        producer = self.producer()
        try:
            native = producer.begin_transaction()
        except Exception as exc:
            raise PublishError(
                f"cannot begin a RocketMQ transaction: {type(exc).__name__}: {exc}"
            ) from None
        return transactions.RocketMQTransaction(self, producer, native)

    def producer(self) -> Any:
        if self._producer is None:
            raise NotConnectedError("the RocketMQ transport is not connected")
        return self._producer

    async def send_failed(self, producer: Any, exc: BaseException) -> None:
        """A half message was refused: replace a producer the proxy forgot (see
        ``_restart_producer``), so that the next transaction works; this one is lost."""
        if _is_stale_client(exc):
            await self._restart_producer(producer)

    async def prepare_transaction_topic(self, topic: str) -> str:
        """The physical topic for a half message to ``topic``, checked to take TRANSACTION
        messages, so a wrongly typed topic fails with a clear error instead of the client's.

        A declared topic (``transaction_topics``) was provisioned so at connect. An undeclared
        one is, when provisioning, turned TRANSACTION on its first transactional publish (a
        development convenience: docs/backends/rocketmq.md says why to declare it)."""
        physical = names.topic_name(topic)
        if physical in self._accepts_transactions:
            return physical
        await self._ensure_topic(physical, self.options.topic_message_type)
        if await self._takes_transactions(physical, refresh=False):
            self._accepts_transactions.add(physical)
            return physical
        provisioner = self._provision.provisioner
        if provisioner is not None and physical not in self._transaction_topics:
            logger.warning(
                "topic %r is used in a transaction but not declared in transaction_topics: "
                "provisioning it for half messages now (declare it, so that normal publishes "
                "to it are refused early and check-backs reach this producer)",
                topic,
            )
            self._transaction_topics.add(physical)
            result = provisioner("topic", self._resource(physical), message_type="TRANSACTION")
            if inspect.isawaitable(result):
                await result
            deadline = time.monotonic() + _RETYPE_WAIT
            while time.monotonic() < deadline:
                if await self._takes_transactions(physical, refresh=True):
                    self._accepts_transactions.add(physical)
                    return physical
                await asyncio.sleep(0.5)
        raise UnsupportedFeatureError(
            f"RocketMQ topic {physical!r} (for {topic!r}) does not take transactional "
            "messages: list the topic in transaction_topics= (with auto_provision=true it "
            "is created with message.type=TRANSACTION), or create it so "
            "(docs/backends/rocketmq.md, Transactions)"
        )

    async def _takes_transactions(self, physical: str, *, refresh: bool) -> bool:
        """Whether the topic's route takes TRANSACTION messages; ``refresh`` asks the proxy
        again (and updates the client's queue selector, which checks the type on send)."""
        producer = self.producer()
        lookup = (
            functools.partial(producer.route_manager.update_topic_route, physical)
            if refresh
            else functools.partial(producer._retrieve_topic_route_data, physical)
        )
        try:
            route = await asyncio.to_thread(lookup)
        except Exception as exc:
            raise PublishError(
                f"cannot look up RocketMQ topic {physical!r}: {type(exc).__name__}: {exc}"
            ) from None
        return route is not None and any(
            transactions.TRANSACTION_TYPE in queue.accept_message_types
            for queue in route.message_queues
        )

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
        if fifo and physical in self._transaction_topics:
            raise UnsupportedFeatureError(
                f"topic {spec.topic!r} is transactional (transaction_topics): RocketMQ half "
                "messages carry no message group, so it cannot be consumed in order"
            )
        await self._ensure_topic(physical, "FIFO" if fifo else self.options.topic_message_type)
        if self._provision.enabled:
            await self._provision.ensure(
                "group", self._resource(physical_group), orderly=spec.ordered
            )
        refused = await self._refusal(
            access.assignment_status,
            physical,
            physical_group,
            action=(
                f"read topic {spec.topic!r} as group {group!r} "
                f"(RocketMQ topic {physical!r}, group {physical_group!r})"
            ),
        )
        if refused is not None:
            raise refused
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
            await_duration=options.await_duration,
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

    def _rewind_admin(self, what: str) -> RemotingAdmin:
        if self._admin is None:
            raise UnsupportedFeatureError(
                f"{what} on RocketMQ needs the admin protocol: pass namesrv= (or "
                "broker_addresses=) to the broker"
            )
        return self._admin

    async def backlog_age(self, topic: str, group: str) -> float | None:
        """The born time of the message at ``group``'s consumer offset, oldest over the
        queues where it is behind (rewind.py); ``None`` without the admin protocol."""
        if self._admin is None:
            return None
        physical_topic = self._resource(names.topic_name(topic))
        physical_group = self._resource(names.group_name(group))
        try:
            return await rewinding.backlog_age(self._admin, physical_group, physical_topic)
        except (remoting.RemotingError, ConnectionFailedError) as exc:
            logger.warning("cannot read the backlog age of %r on %r: %s", group, topic, exc)
            return None

    async def rewind(
        self, topic: str, group: str, since: float, *, dry_run: bool = False
    ) -> int | None:
        """Reset ``group``'s offsets on ``topic`` by time on every master (rewind.py)."""
        admin = self._rewind_admin("rewind")
        physical_topic = self._resource(names.topic_name(topic))
        physical_group = self._resource(names.group_name(group))
        try:
            return await rewinding.rewind_group(
                admin, physical_group, physical_topic, since, dry_run=dry_run
            )
        except remoting.RemotingError as exc:
            raise ConnectionFailedError(
                f"could not rewind {group!r} on {topic!r} over the RocketMQ admin protocol: {exc}"
            ) from None

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


#: Pauses between route lookups of a topic (a lookup is a read: repeating it is safe).
ROUTE_RETRY_PAUSES = (0.5, 1.0, 2.0)


async def route_with_retries(lookup: Callable[[str], Any], physical: str) -> Any:
    """The topic's route, looked up off the loop, asked again after a failed lookup.

    The client raises "failed to fetch topic ... route" for *any* failed route query, including
    one that timed out on a busy proxy, and a publish then failed although the topic existed
    (seen once in a CI run, right after the topic was provisioned). A lookup that still fails
    after the pauses raises the client's error, which :meth:`RocketMQTransport.publish` turns
    into a typed one (after asking the proxy whether its ACL refused it)."""
    for pause in ROUTE_RETRY_PAUSES:
        try:
            return await asyncio.to_thread(lookup, physical)
        except Exception as exc:
            logger.info(
                "route of %r not fetched (%s); asking again in %.1f s", physical, exc, pause
            )
        await asyncio.sleep(pause)
    return await asyncio.to_thread(lookup, physical)


def _is_stale_client(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "40015" in text or "client settings" in text or "settings is null" in text


def _shutdown_quietly(client: Any) -> None:
    try:
        client.shutdown()
    except Exception as exc:
        logger.debug("client shutdown: %s", exc)
