"""``Broker``: the object an application talks to (publish, subscribe, run)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from itertools import repeat
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol, TypeVar, runtime_checkable

import uuid_utils

from . import envelope, transactions, validation
from . import rewind as rewind_
from .batch import BatchPolicy, Outgoing, PublishBatchError
from .batch_prepare import BodyBatch, prepare_bodies
from .clock import Clock, SystemClock
from .delivery.host import Middleware
from .delivery.runtime import PipelineContext, SubscriberRuntime
from .errors import (
    BrokerUnreachableError,
    ConfigurationError,
    NotConnectedError,
    RequestTimeoutError,
    UnimqError,
    UnsupportedFeatureError,
)
from .handler import HandlerFunc
from .idempotency import IdempotencyStore, MemoryIdempotencyStore
from .instrumentation import Listener, Listeners, PublishMiddleware
from .plugins import plugins, store_registry, transport_registry
from .publishing import Publisher
from .ratelimit import RateLimit
from .retry import RetryPolicy
from .router import Router, Subscriber
from .settings import options_from_env, positive_seconds
from .threads import HandlerThreads
from .transport import (
    SupportsTransactionalConsume,
    SupportsWaitIdle,
    Transport,
    TransportContext,
)
from .url import BrokerURL, option_secrets, scrub
from .validation import Prepared

if TYPE_CHECKING:
    from .message import Message
    from .requests import Requests

logger = logging.getLogger("unimq")
F = TypeVar("F", bound=HandlerFunc)
Hook = Callable[[], Awaitable[None]]
H = TypeVar("H", bound=Hook)

#: One shared real clock, so brokers that share a ``memory://NAME`` agree on time by default.
SYSTEM_CLOCK = SystemClock()

_CORE_OPTIONS = frozenset(
    {
        "connect_timeout",
        "graceful_timeout",
        "clock",
        "idempotency_store",
        "idempotency_lease",
        "instance_id",
        "outbox",
        "transaction_checker",
    }
)


@runtime_checkable
class Outbox(Protocol):
    """What ``Broker(url, outbox=...)`` drives (``unimq_sql.SQLOutbox``): a relay that runs
    while the broker is connected, so ``unimq run`` relays too (docs/consistency.md)."""

    async def start_relay(self, broker: Broker) -> None: ...

    async def stop_relay(self) -> None: ...


class PublishReceipt(NamedTuple):
    """What ``publish`` returns once the broker holds the message durably.

    (A named tuple: one is built per publish, and it is the cheapest immutable record.)
    """

    message_id: str
    topic: str
    deliver_at: datetime | None = None


class Broker:
    """A connection to one message broker, chosen by URL, with the subscribers to run on it.

    Options unimq consumes itself (everything else goes to the transport):

    - ``connect_timeout`` (10 s): how long ``async with broker`` may take to connect before
      :class:`~unimq.errors.BrokerUnreachableError`.
    - ``graceful_timeout`` (30 s): how long shutdown waits for in-flight handlers.
    - ``clock``: a :class:`~unimq.testing.VirtualClock` for tests on ``memory://``.
    - ``idempotency_store``: an :class:`~unimq.idempotency.IdempotencyStore` or a store URL
      (``redis://...`` with the Redis plugin); default: in-process memory.
    - ``idempotency_lease`` (300 s): how long a duplicate waits for a running first copy.
    - ``instance_id``: names this process's broadcast subscriptions (default: random).
    - ``outbox``: a transactional outbox (``unimq_sql.SQLOutbox``) whose committed rows the
      broker relays while connected.
    - ``transaction_checker``: ``async def check(message: Message) -> bool`` answers a broker's
      check-back for a transaction whose producer vanished before committing (RocketMQ half
      messages): ``True`` commits the message, ``False`` rolls it back.
    """

    def __init__(self, url: str, **options: Any) -> None:
        self.url = BrokerURL.parse(url)
        core = {k: v for k, v in options.items() if k in _CORE_OPTIONS}
        self.transport_options = {k: v for k, v in options.items() if k not in _CORE_OPTIONS}
        self.connect_timeout = positive_seconds(
            core.get("connect_timeout", 10.0), "connect_timeout"
        )
        self.graceful_timeout = positive_seconds(
            core.get("graceful_timeout", 30.0), "graceful_timeout"
        )
        self.idempotency_lease = positive_seconds(
            core.get("idempotency_lease", 300.0), "idempotency_lease"
        )
        self.clock: Clock = core.get("clock") or SYSTEM_CLOCK
        self.instance_id = str(core.get("instance_id") or uuid_utils.uuid4().hex[:12])
        store = core.get("idempotency_store")
        # A store built here from a URL belongs to the broker, which closes it on stop; a store
        # object passed in belongs to the caller.
        self._owns_store = isinstance(store, str)
        if isinstance(store, str):
            store = store_registry().create(store)
        if store is not None and not isinstance(store, IdempotencyStore):
            raise ConfigurationError(
                f"idempotency_store must be an IdempotencyStore or a URL, got {store!r}"
            )
        self.idempotency_store: IdempotencyStore = store or MemoryIdempotencyStore()
        self.outbox: Outbox | None = core.get("outbox")
        if self.outbox is not None and not isinstance(self.outbox, Outbox):
            raise ConfigurationError(f"outbox must be an outbox (SQLOutbox), got {self.outbox!r}")
        entry = transport_registry().get(self.url.scheme)
        context = TransportContext(
            clock=self.clock,
            instance_id=self.instance_id,
            check_transaction=transactions.checker_adapter(core.get("transaction_checker")),
        )
        # Secret transport options (sasl_password=...) are masked like the URL's password.
        self._secrets = (*self.url.secrets, *option_secrets(self.transport_options))
        failure: UnimqError | None = None
        try:
            self.transport: Transport = entry.factory(self.url, self.transport_options, context)
        except UnimqError as exc:  # the adapter's own error: its text may still hold a secret
            failure = scrub(exc, self._mask)
        except Exception as exc:  # a third-party factory's own error: wrap, mask the URL
            failure = ConfigurationError(
                f"cannot create the {self.url.scheme}:// transport for {self.url.redacted()}: "
                f"{type(exc).__name__}: {self._mask(str(exc))}"
            )
        if failure is not None:  # raised outside the except: no __context__ holding the raw error
            raise failure from None
        self.capabilities = self.transport.capabilities
        self.publisher = Publisher(self.transport, self.clock)
        self.middlewares: list[Middleware] = []
        self.listeners = Listeners()
        self._router = Router()
        self._checked_topic: object = None  # the last topic publish found valid
        self._runtimes: list[SubscriberRuntime] = []
        self._executor: HandlerThreads | None = None
        self._connected = False
        self._running = False
        self.declared_publishers: list[tuple[str, Any, str]] = []  # see publishes()
        self._startup: list[Hook] = []
        self._shutdown: list[Hook] = []
        self._started_hooks = False  # the startup hooks ran: the shutdown hooks run on stop
        self._requests: Requests | None = None
        plugins.manager.hook.unimq_broker_created(broker=self)

    def _mask(self, text: str) -> str:
        """``text`` with the URL's password and every secret option masked."""
        return self.url.mask(text, self._secrets)

    @classmethod
    def from_env(cls, default_url: str | None = None, **overrides: Any) -> Broker:
        """Build a broker from ``UNIMQ_URL`` and ``UNIMQ_*`` options (see :mod:`unimq.settings`)."""
        url, options = options_from_env(os.environ, default_url=default_url)
        options.update(overrides)
        return cls(url, **options)

    # -- declaring subscribers ------------------------------------------------------------

    def subscriber(
        self,
        topic: str,
        *,
        group: str | None = None,
        retry: RetryPolicy | None = None,
        dead_letter: bool | str = True,
        ordered: bool = False,
        concurrency: int = 16,
        idempotent: bool = False,
        ack: Literal["auto", "manual"] = "auto",
        broadcast: bool = False,
        batch: BatchPolicy | None = None,
        rate_limit: RateLimit | None = None,
        transactional: bool = False,
    ) -> Callable[[F], F]:
        """Register the decorated function as a handler; see :meth:`Router.subscriber`."""
        decorate = self._router.subscriber(
            topic,
            group=group,
            retry=retry,
            dead_letter=dead_letter,
            ordered=ordered,
            concurrency=concurrency,
            idempotent=idempotent,
            ack=ack,
            broadcast=broadcast,
            batch=batch,
            rate_limit=rate_limit,
            transactional=transactional,
        )

        def register(func: F) -> F:
            decorate(func)
            self._check_capabilities(self._router.subscribers[-1])
            return func

        return register

    def publishes(self, topic: str, body_type: Any, *, description: str = "") -> None:
        """Declare that this service publishes ``body_type`` to ``topic``: documentation only
        (the AsyncAPI document, ``unimq asyncapi``); publishing does not require it."""
        validation.check_name(topic, "topic")
        self.declared_publishers.append((topic, body_type, description))

    def include_router(self, router: Router) -> None:
        for subscriber in router.subscribers:
            self._check_capabilities(subscriber)
        self._router.include_router(router)

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def subscribers(self) -> list[Subscriber]:
        return list(self._router.subscribers)

    def add_middleware(self, middleware: Middleware) -> None:
        """Wrap every handler call: ``async def mw(message, call_next)``, outermost first."""
        self.middlewares.append(middleware)

    def add_publish_middleware(self, middleware: PublishMiddleware) -> None:
        """Wrap every message put on the wire: ``async def mw(publish, call_next)``, outermost
        first (see :mod:`unimq.instrumentation`)."""
        self.publisher.middlewares.append(middleware)

    def add_listener(self, listener: Listener) -> None:
        """Hear retries, dead-lettering, start and stop (see :mod:`unimq.instrumentation`)."""
        self.listeners.append(listener)

    def _check_capabilities(self, subscriber: Subscriber) -> None:
        capabilities = self.capabilities
        scheme = self.url.scheme
        if subscriber.ordered and not capabilities.ordering:
            raise UnsupportedFeatureError(
                f"subscriber {subscriber.handler.name}: ordered=True, but the {scheme}:// backend "
                "cannot deliver messages of one key in order"
            )
        if subscriber.broadcast and not capabilities.broadcast:
            raise UnsupportedFeatureError(
                f"subscriber {subscriber.handler.name}: broadcast=True, but the {scheme}:// "
                "backend has no per-instance subscriptions"
            )
        if subscriber.transactional and not isinstance(
            self.transport, SupportsTransactionalConsume
        ):
            raise UnsupportedFeatureError(
                f"subscriber {subscriber.handler.name}: transactional=True, but the {scheme}:// "
                "backend cannot commit a consumed message in a transaction (Kafka can); make the "
                "handler idempotent (idempotent=True) and publish through the transactional "
                "outbox instead (docs/consistency.md)"
            )

    # -- lifecycle ------------------------------------------------------------------------

    def on_startup(self, hook: H) -> H:
        """Run ``async def hook()`` on start: after connect, before subscribers start (in
        ``async with broker``, ``unimq run`` and an ASGI lifespan), so a service can publish
        or warm up at start. Hooks run in the order they were added; one that raises stops
        the start (the broker disconnects and the error propagates)."""
        self._startup.append(hook)
        return hook

    def on_shutdown(self, hook: H) -> H:
        """Run ``async def hook()`` on stop: after subscribers stopped and in-flight handlers
        finished, before disconnect (so it can still publish). Runs only if the startup hooks
        ran; an error is logged and the other hooks and the disconnect still happen."""
        self._shutdown.append(hook)
        return hook

    @asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[dict[str, Any]]:
        """An ASGI lifespan: ``FastAPI(lifespan=broker.lifespan)`` (Starlette, or any framework
        taking a lifespan context). Starts the broker on startup; on shutdown stops consuming,
        waits for in-flight handlers (``graceful_timeout``) and disconnects.

        Yields the lifespan state ``{"broker": broker}``, so a route reaches it as
        ``request.state.broker`` (see ``docs/web-frameworks.md``).
        """
        await self.start()
        try:
            yield {"broker": self}
        finally:
            await self.stop()

    async def connect(self) -> None:
        """Connect without starting subscribers (enough for a publish-only application)."""
        if self._connected:
            return
        failure: UnimqError | None = None
        try:
            await asyncio.wait_for(self.transport.connect(), self.connect_timeout)
        except asyncio.TimeoutError:
            failure = BrokerUnreachableError(
                f"could not connect to {self.url.redacted()} within {self.connect_timeout:g}s "
                "(connect_timeout); is the broker running and reachable?"
            )
        except UnimqError as exc:  # the adapter's own error: its text may still hold a secret
            failure = scrub(exc, self._mask)
        except Exception as exc:
            failure = BrokerUnreachableError(
                f"could not connect to {self.url.redacted()}: {type(exc).__name__}: "
                f"{self._mask(str(exc))}"
            )
        if failure is not None:  # raised outside the except: no __context__ holding the raw error
            await _quietly(self.transport.close())
            raise failure from None
        self._connected = True
        logger.info("connected to %s", self.url.redacted())
        self.listeners.broker_connected(self)
        if self.outbox is not None:
            try:
                await self.outbox.start_relay(self)
            except BaseException:
                await self.stop()
                raise

    async def start(self) -> None:
        """Connect, declare what the subscribers need, and start consuming."""
        if self._running:
            return
        await self.connect()
        if any(not s.handler.is_async for s in self._router.subscribers):
            workers = sum(s.concurrency for s in self._router.subscribers if not s.handler.is_async)
            self._executor = HandlerThreads(max_workers=max(1, min(workers, 256)))
        context = PipelineContext(
            transport=self.transport,
            publisher=self.publisher,
            clock=self.clock,
            executor=self._executor,
            idempotency_store=self.idempotency_store,
            idempotency_lease=self.idempotency_lease,
            middlewares=self.middlewares,
            listeners=self.listeners,
        )
        self._running = True
        try:
            for hook in self._startup:
                await hook()
            self._started_hooks = True
            for subscriber in self._router.subscribers:
                group = subscriber.group
                if subscriber.broadcast:
                    group = f"{group}.{self.instance_id}"
                runtime = SubscriberRuntime(context, subscriber, group)
                self._runtimes.append(runtime)
                await runtime.start()
                logger.info(
                    "subscribed %s to %r (group %r, concurrency %d)",
                    subscriber.handler.name,
                    subscriber.topic,
                    group,
                    subscriber.concurrency,
                )
        except BaseException:
            await self.stop()
            raise

    async def stop(self, timeout: float | None = None) -> None:
        """Stop consuming, let in-flight handlers finish (``graceful_timeout``), disconnect."""
        timeout = self.graceful_timeout if timeout is None else timeout
        runtimes, self._runtimes = self._runtimes, []
        if runtimes:
            await asyncio.gather(*(runtime.stop(timeout) for runtime in runtimes))
        self._running = False
        if self._started_hooks:
            self._started_hooks = False
            for hook in self._shutdown:
                try:
                    await hook()
                except Exception:
                    logger.exception("shutdown hook %s failed", getattr(hook, "__name__", hook))
        if self._requests is not None:
            requests, self._requests = self._requests, None
            await requests.close()
        if self._connected:
            if self.outbox is not None:
                await self.outbox.stop_relay()
            self._connected = False
            await self.transport.close()
            logger.info("disconnected from %s", self.url.redacted())
            self.listeners.broker_disconnected(self)
        if self._executor is not None:
            if self._executor.running:
                logger.warning(
                    "%d plain-def handler(s) still running in worker threads after shutdown; "
                    "they are abandoned (the process can exit) and their messages redelivered",
                    self._executor.running,
                )
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        close_store = getattr(self.idempotency_store, "close", None)
        if self._owns_store and callable(close_store):
            await _quietly(close_store())

    async def __aenter__(self) -> Broker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- publishing -----------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        body: Any,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: timedelta | float | None = None,
        deliver_at: datetime | None = None,
        message_id: str | None = None,
    ) -> PublishReceipt:
        """Publish ``body`` to ``topic``; returns once the broker holds it durably.

        Inside a ``transactional=True`` handler it stages into the handler's transaction
        instead: visible once the handler succeeds, never if it fails."""
        if not self._connected:
            raise NotConnectedError(
                "the broker is not connected: publish inside 'async with broker:' "
                "(or after 'await broker.connect()')"
            )
        tx = transactions.CURRENT.get()
        if tx is not None:
            return await tx.publish(
                topic,
                body,
                key=key,
                headers=headers,
                delay=delay,
                deliver_at=deliver_at,
                message_id=message_id,
            )
        topic, payload, wire, key, message_id, content_type, due = self._prepare(
            topic, body, key, headers, delay, deliver_at, message_id
        )
        if due is None:
            await self.publisher.send_now(topic, payload, wire, key, message_id, content_type)
            return PublishReceipt(message_id, topic)
        await self.publisher.send(
            topic, payload, wire, key=key, message_id=message_id, content_type=content_type, due=due
        )
        return PublishReceipt(message_id, topic, datetime.fromtimestamp(due, tz=timezone.utc))

    async def publish_batch(
        self,
        topic: str,
        items: Iterable[Any],
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> list[PublishReceipt]:
        """Publish many messages; returns one receipt per item, in order, once every item is
        durable. ``items`` are bodies or :class:`~unimq.Outgoing` (its own key, headers, id,
        delay); ``key``/``headers`` apply to items that give none.

        Every item is checked before any is sent. The items go out together (the broker's own
        pipelining: one write per loop turn on RabbitMQ, librdkafka's queue on Kafka), and the
        call waits for all of them: if some were not confirmed it raises
        :class:`~unimq.PublishBatchError`, which names them; the confirmed ones stay published.
        """
        if not self._connected:
            raise NotConnectedError(
                "the broker is not connected: publish inside 'async with broker:' "
                "(or after 'await broker.connect()')"
            )
        tx = transactions.CURRENT.get()
        if tx is not None:  # a transactional handler: every item joins its transaction
            return [
                await tx.publish(
                    topic,
                    item.body,
                    key=item.key if item.key is not None else key,
                    headers=item.headers if item.headers is not None else headers,
                    delay=item.delay,
                    deliver_at=item.deliver_at,
                    message_id=item.message_id,
                )
                if isinstance(item, Outgoing)
                else await tx.publish(topic, item, key=key, headers=headers)
                for item in items
            ]
        items = items if isinstance(items, (list, tuple)) else list(items)
        # The item types once, in C: no Outgoing (or subclass) among them means plain bodies.
        kinds = set(map(type, items))
        plain = not any(issubclass(kind, Outgoing) for kind in kinds)
        prepared: list[Prepared] = []
        if plain:  # bodies only: topic, key and headers are checked once (see batch_prepare)
            publisher = self.publisher
            batch = prepare_bodies(
                topic,
                items,
                key,
                headers,
                self.clock.now,
                topic is self._checked_topic,
                columns=publisher.takes_columns,
                kinds=kinds,
            )
            self._checked_topic = topic
            if isinstance(batch, BodyBatch):  # columns all the way (SupportsPublishBodies)
                return _body_receipts(batch, await publisher.send_batch(batch))
            prepared = batch
        for index, item in enumerate(() if plain else items):
            try:
                if isinstance(item, Outgoing):
                    prepared.append(
                        self._prepare(
                            topic,
                            item.body,
                            item.key if item.key is not None else key,
                            item.headers if item.headers is not None else headers,
                            item.delay,
                            item.deliver_at,
                            item.message_id,
                        )
                    )
                else:
                    prepared.append(self._prepare(topic, item, key, headers, None, None, None))
            except UnimqError as exc:
                exc.args = (f"item {index}: {exc}", *exc.args[1:])  # say which item
                raise
        results = await self.publisher.send_batch(prepared)
        receipts: list[PublishReceipt | None] = []
        failures: dict[int, BaseException] = {}
        make = tuple.__new__  # PublishReceipt without its Python-level __new__: once per item
        for index, (result, (name, _, _, _, mid, _, due)) in enumerate(
            zip(results, prepared, strict=True)
        ):
            if result is not None:
                failures[index] = result
                receipts.append(None)
                continue
            at = datetime.fromtimestamp(due, tz=timezone.utc) if due is not None else None
            receipts.append(make(PublishReceipt, (mid, name, at)))
        if failures:
            raise PublishBatchError(failures, receipts)
        return receipts  # type: ignore[return-value]

    async def request(
        self,
        topic: str,
        body: Any,
        *,
        timeout: float = 30.0,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """Publish ``body`` as a request and return the reply: the subscriber's return value,
        as a :class:`~unimq.Message` (``reply.body``; decode it like any message).

        Raises :class:`~unimq.RequestTimeoutError` when no reply comes within ``timeout``
        seconds (no subscriber, a handler still failing, retries outlasting the timeout). A
        handler that fails is retried and dead-lettered as usual; only a success replies.
        """
        if not self._connected:
            raise NotConnectedError(
                "the broker is not connected: request inside 'async with broker:' "
                "(or after 'await broker.connect()')"
            )
        seconds = positive_seconds(timeout, "timeout")
        topic, payload, wire, key, message_id, content_type, _ = self._prepare(
            topic, body, key, headers, None, None, None
        )
        if self._requests is None:
            from .requests import Requests  # only services that send requests load it

            self._requests = Requests(self.transport, self.instance_id)
        requests = self._requests
        correlation_id = message_id
        future = requests.expect(correlation_id)
        envelope.ask_reply(wire, reply_to=requests.topic, correlation_id=correlation_id)

        async def ask() -> Message:
            await requests.open()
            await self.publisher.send_now(topic, payload, wire, key, message_id, content_type)
            return await future

        try:
            return await asyncio.wait_for(ask(), seconds)
        except asyncio.TimeoutError:
            raise RequestTimeoutError(
                f"no reply to request {message_id} on {topic!r} within {seconds:g}s"
            ) from None
        finally:
            requests.forget(correlation_id)

    def transaction(self) -> transactions.Transaction:
        """A native broker transaction: ``async with broker.transaction() as tx: await
        tx.publish(...)``. Leaving the block commits; an exception inside it rolls back.

        Backends without native transactions raise :class:`UnsupportedFeatureError` here,
        pointing to the transactional outbox (docs/consistency.md).
        """
        if not self._connected:
            raise NotConnectedError(
                "the broker is not connected: open transactions inside 'async with broker:'"
            )
        transactions.check_not_nested()
        reason = transactions.refuse_reason(self.transport)
        if reason is not None:
            raise UnsupportedFeatureError(reason)
        return transactions.Transaction(
            self.transport, self.clock.now, self.capabilities.max_transaction_messages
        )

    def _prepare(
        self,
        topic: str,
        body: Any,
        key: str | None,
        headers: Mapping[str, str] | None,
        delay: timedelta | float | None,
        deliver_at: datetime | None,
        message_id: str | None,
    ) -> tuple[str, bytes, dict[str, str], str | None, str, str, float | None]:
        """Check every argument and build what goes on the wire (``validation.prepare_publish``)."""
        prepared = validation.prepare_publish(
            topic,
            body,
            key,
            headers,
            delay,
            deliver_at,
            message_id,
            self.clock.now,
            topic is self._checked_topic,  # a str is immutable: the same object passed before
        )
        self._checked_topic = topic
        return prepared

    # -- operations -----------------------------------------------------------------------

    async def rewind(
        self,
        topic: str,
        group: str,
        *,
        to: datetime | float | None = None,
        by: timedelta | float | None = None,
        dry_run: bool = False,
    ) -> int | None:
        """Move ``group`` back so it consumes again what was published to ``topic`` since
        ``to`` (a time) or in the last ``by`` (a duration); returns how many messages it will
        consume again (``None`` where the broker cannot tell). ``dry_run`` only counts.

        Where the backend can (``Capabilities.rewind``; docs/operations.md); stop the group's
        consumers first on Kafka. See :mod:`unimq.rewind`.
        """
        if not self._connected:
            raise NotConnectedError("the broker is not connected: rewind after connect()")
        since = rewind_.since_time(self.clock.now(), to=to, by=by)
        return await rewind_.rewind(
            self.transport, self.url.scheme, topic, group, since, dry_run=dry_run
        )

    # -- testing helpers ------------------------------------------------------------------

    async def drain(self, timeout: float | None = None) -> None:
        """Return when no message is in flight or ready (delayed messages not yet due excepted).

        On ``memory://`` this covers every broker sharing the name; on other backends it waits
        for this broker's own in-flight handlers.
        """

        async def wait() -> None:
            transport = self.transport
            if isinstance(transport, SupportsWaitIdle):
                await transport.wait_idle()
            else:
                while any(runtime.in_flight for runtime in self._runtimes):  # noqa: ASYNC110
                    await asyncio.sleep(0.005)

        await asyncio.wait_for(wait(), timeout)

    def __repr__(self) -> str:
        state = "running" if self._running else ("connected" if self._connected else "idle")
        return f"<Broker {self.url.redacted()} {state} subscribers={len(self._router.subscribers)}>"


def _body_receipts(batch: BodyBatch, results: list[BaseException | None]) -> list[PublishReceipt]:
    """``publish_batch``'s receipts for a :class:`BodyBatch`, built after the wait from its id
    column (no tuple per item kept alive during it). All confirmed, the common case: one
    ``map`` in C. Otherwise :class:`PublishBatchError` names exactly the unconfirmed items,
    with a receipt for each confirmed one, as the general path raises it."""
    topic, ids = batch.topic, batch.ids
    make = tuple.__new__  # PublishReceipt without its Python-level __new__
    if results.count(None) == len(ids):
        return list(map(make, repeat(PublishReceipt), zip(ids, repeat(topic), repeat(None))))
    receipts: list[PublishReceipt | None] = []
    failures: dict[int, BaseException] = {}
    for index, (result, message_id) in enumerate(zip(results, ids, strict=True)):
        if result is None:
            receipts.append(make(PublishReceipt, (message_id, topic, None)))
        else:
            failures[index] = result
            receipts.append(None)
    raise PublishBatchError(failures, receipts)


async def _quietly(awaitable: Any) -> None:
    try:
        await awaitable
    except Exception:
        pass
