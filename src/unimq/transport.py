"""The adapter SPI: what a broker adapter implements so that unimq can run on it.

Modelled on httpx's transport interface: a handful of methods that only move bytes. Every
semantic (retry, dead-lettering, delay re-hops, ordering lanes, idempotency, shutdown) lives
once in the delivery pipeline above this interface; an adapter states what its broker can do
natively in :class:`Capabilities` and unimq fills the gaps or refuses clearly.

Consumption is *pull*-based (``Subscription.receive``) rather than callback-based: the core runs
``concurrency`` workers per subscriber that each pull, handle and settle. Pulling gives natural
back-pressure (a worker only asks for a message when it is free) and costs no task per message,
which is what makes the memory backend fast; push-style clients (aio-pika) adapt with a small
queue bounded by the prefetch count.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from .clock import Clock
from .errors import PublishError
from .url import BrokerURL


@dataclass(frozen=True)
class Capabilities:
    """What a backend offers natively; the core emulates or refuses the rest.

    - ``max_delay``: longest native delivery delay in seconds (``None`` = unlimited, ``0`` = no
      native delay). Longer delays are split into hops by the core.
    - ``ordering``: deliveries of one subscription with the same key arrive in publish order.
      Without it, ``ordered=True`` is refused at subscribe time.
    - ``broadcast``: per-instance subscriptions (``broadcast=True``) are possible.
    - ``durable``: published messages survive a broker restart (the memory backend: no).
    - ``max_message_size``: largest body in bytes, checked before publishing (``None``: no limit).
    - ``revocable``: deliveries implement :class:`SupportsRevocation`; the core checks
      ``delivery.revoked`` before it starts (or restarts) a handler, and only then.
    - ``transactions``: the transport implements :class:`SupportsTransactions` (native broker
      transactions: Kafka producer transactions, RocketMQ half messages); ``broker.transaction()``
      is refused elsewhere with a pointer to the transactional outbox.
    - ``max_transaction_messages``: how many messages one transaction may hold (``None``: no
      limit; RocketMQ's client: 1).
    - ``keeps_unread``: a publish to a topic that no group reads yet is kept for the first group
      that subscribes (a log, a durable holding queue). ``False``: such a publish raises
      :class:`~unimq.errors.PublishError` instead (RabbitMQ: an exchange with no queue bound
      returns the message; unimq's own dead-letter topics are kept either way). Never a
      silent drop.
    - ``rewind``: the transport implements :class:`SupportsRewind` (move a group's position back
      to a point in time).
    """

    max_delay: float | None = None
    ordering: bool = True
    broadcast: bool = True
    durable: bool = True
    max_message_size: int | None = None
    revocable: bool = False
    keeps_unread: bool = True
    transactions: bool = False
    max_transaction_messages: int | None = None
    rewind: bool = False


@dataclass(slots=True)
class OutgoingMessage:
    """A message ready for the wire. ``headers`` already carry unimq's bookkeeping headers.

    ``deliver_at`` (epoch seconds) asks the transport to hold the message until then; the core
    only sets it within ``Capabilities.max_delay`` of now.
    """

    topic: str
    body: bytes
    headers: dict[str, str]
    key: str | None = None
    message_id: str | None = None
    content_type: str | None = None
    deliver_at: float | None = None


@runtime_checkable
class Delivery(Protocol):
    """One message as received from the broker, not yet settled.

    ``topic`` is the physical topic it arrived on; ``native_id`` is the broker's own identity of
    the message (message id, or ``topic/partition/offset``), used as the unimq id for messages
    published by other clients.
    """

    @property
    def topic(self) -> str: ...

    @property
    def key(self) -> str | None: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def body(self) -> bytes: ...

    @property
    def native_id(self) -> str: ...

    async def ack(self) -> None:
        """Settle the delivery: the broker must not deliver it to this group again.

        If the ack cannot reach the broker (the connection dropped), log it and return: the
        broker redelivers the message, which is the at-least-once contract (idempotent
        subscribers then skip it). Raising is reserved for programming errors.
        """


@runtime_checkable
class SupportsTimestamp(Protocol):
    """Optional on a :class:`Delivery`: the broker's own time for the message (epoch seconds;
    Kafka's record timestamp, RocketMQ's born time, RabbitMQ's ``timestamp`` property), or
    ``None``. Read only for a message without ``unimq-published-at`` (another client's), as
    its publish time for the delivery delay."""

    @property
    def timestamp(self) -> float | None: ...


@runtime_checkable
class SupportsRevocation(Protocol):
    """Optional on a :class:`Delivery` (declared by ``Capabilities.revocable``).

    ``revoked`` turns ``True`` once the broker may hand this delivery to another consumer:
    Kafka revoked its partition from this member, RocketMQ's invisibility lapsed and could not
    be renewed, RabbitMQ closed the channel it came on. Running its handler then would race the
    new owner and break per-key order, so the core drops a revoked delivery without settling it
    (the new owner has it) instead of starting or retrying its handler.
    """

    @property
    def revoked(self) -> bool: ...


@dataclass(frozen=True)
class SubscriptionSpec:
    """What to consume: ``topic`` for ``group``.

    ``broadcast`` asks for a subscription of this instance alone (removed when it closes);
    ``ordered`` asks that deliveries with the same key come in publish order; ``prefetch`` is how
    many unsettled deliveries the core may hold at once. ``role`` says why the core consumes the
    topic: ``"main"`` (the subscriber's topic) or ``"retry"`` (the group's retry topic, which
    carries retry and delay-hop copies), so an adapter never has to guess it from the name.
    """

    topic: str
    group: str
    prefetch: int
    broadcast: bool = False
    ordered: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    role: Literal["main", "retry"] = "main"
    #: The subscriber is ``transactional=True``: its consumption is committed only inside
    #: consume transactions (:class:`SupportsTransactionalConsume`), so the transport must not
    #: commit it by itself: a plain commit racing a transactional one can move the group back
    #: and have a committed message handled again.
    transactional: bool = False


class Subscription(Protocol):
    async def receive(self) -> Delivery | None:
        """The next delivery, waiting for one; ``None`` once :meth:`stop` was called."""

    async def stop(self) -> None:
        """Stop handing out deliveries (wakes waiting receivers with ``None``); settling the ones
        already handed out must keep working until :meth:`close`."""

    async def close(self) -> None:
        """Release the subscription. Deliveries handed out but not acked go back to the broker."""


@runtime_checkable
@runtime_checkable
class SupportsPublishMany(Protocol):
    """Optional on a :class:`Transport`: publish many messages with one wait for all.

    ``Broker.publish_batch`` calls it (when no publish middleware is installed) instead of one
    ``publish`` per message, so a client that batches anyway (librdkafka's queue) is fed the
    way it is meant to be. Capability-free: without it the core publishes the messages
    concurrently, each of a key after the previous one of that key.
    """

    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> list[BaseException | None]:
        """Publish every message durably; messages with the same key reach the broker in this
        order. Returns, per message, ``None`` (durable) or the error that message got; raises
        only when nothing could be attempted (not connected)."""
        ...


@runtime_checkable
class SupportsPublishBodies(Protocol):
    """Optional on a :class:`Transport`: ``publish_batch``'s common case as columns.

    A batch of plain bodies shares its topic, key and headers; only the body and the id differ
    per item. ``Broker.publish_batch`` hands such a batch over in one call (when no publish
    middleware is installed) instead of an :class:`OutgoingMessage` and a headers ``dict`` per
    item, so a transport that feeds a batching client (librdkafka) can build its wire headers
    once and swap in each item's id. Capability-free: without it the batch goes through
    ``publish_many`` or one ``publish`` per item, with the same records on the wire.
    """

    async def publish_bodies(
        self,
        topic: str,
        bodies: Sequence[bytes],
        key: str | None,
        headers: Mapping[str, str],
        id_header: str,
        ids: Sequence[str],
    ) -> list[BaseException | None]:
        """Publish one message per body, in order, durably: item ``i`` carries ``headers`` with
        ``headers[id_header]`` replaced by ``ids[i]`` (the header keeps its place), the same
        records ``publish_many`` would send. Returns, per item, ``None`` (durable) or its error;
        raises only when nothing could be attempted (not connected)."""
        ...


@runtime_checkable
class SupportsAckMany(Protocol):
    """Optional on a :class:`Delivery` class: acknowledge many deliveries in one call.

    A batch subscriber whose handler succeeded acks its whole batch; a class with
    ``ack_many`` gets the batch's deliveries of that class in one call (one lock, one
    bookkeeping pass) instead of one ``ack`` each. Capability-free: without it the core calls
    ``ack`` per delivery, with the same result. The deliveries may come from different
    subscriptions of the transport (a subscriber's main and retry topics).
    """

    @classmethod
    async def ack_many(cls, deliveries: Sequence[Any]) -> None:
        """``ack`` every delivery (each at most once, as ``ack`` promises), in order."""
        ...


@runtime_checkable
class SupportsReceiveMany(Protocol):
    """Optional on a :class:`Subscription`: hand over several deliveries in one call.

    Batch subscribers call it instead of ``receive`` when a subscription has it, so a backend
    that reads messages in batches anyway (a consumer thread's buffer, a queue in memory) moves
    them to the batch in one step rather than one await per message. Capability-free: without
    it the core calls ``receive`` once per delivery, with the same result.
    """

    async def receive_many(self, max_n: int) -> list[Delivery]:
        """Wait until at least one delivery is ready, then return up to ``max_n`` (>= 1)
        without waiting for more; ``[]`` once the subscription is stopped."""
        ...


class Transport(Protocol):
    capabilities: Capabilities

    async def connect(self) -> None:
        """Connect (raising :class:`~unimq.errors.AuthenticationError` for refused credentials,
        :class:`~unimq.errors.ConnectionFailedError` otherwise). The caller bounds the time."""

    async def close(self) -> None:
        """Disconnect; idempotent."""

    async def publish(self, message: OutgoingMessage) -> None:
        """Return only when the broker holds the message durably; raise PublishError otherwise."""

    async def subscribe(self, spec: SubscriptionSpec) -> Subscription:
        """Declare what the subscription needs (idempotently) and start consuming."""


@runtime_checkable
class SupportsDeclareTopic(Protocol):
    """Optional: keep messages of a topic that no group consumes yet.

    The core calls it for every dead-letter topic when a subscriber starts, so a dead letter
    is never unroutable and waits for whoever inspects the DLQ (RabbitMQ: a holding queue
    named after the topic; Kafka/RocketMQ: create the topic).
    """

    async def declare_topic(self, topic: str) -> None: ...


@runtime_checkable
class SupportsWaitIdle(Protocol):
    """Optional: a backend that can tell when nothing is ready or unsettled (the memory one).

    Unsettled deliveries that the pipeline parked on the clock (:class:`SupportsPark`) count as
    delayed, not in flight. ``Broker.drain`` uses this when the transport offers it.
    """

    async def wait_idle(self) -> None: ...


@runtime_checkable
class SupportsPark(Protocol):
    """Optional on a :class:`Delivery` of a backend that offers :class:`SupportsWaitIdle`.

    The pipeline parks a delivery it holds on purpose until a time — an ordered retry waiting
    for its backoff (and the deliveries of the same key queued behind it), a delivery that
    arrived a little early, a settlement waiting to try again after a broker fault — and
    unparks it when it goes on. A parked delivery is "delayed, not yet due" for ``drain``: on a
    virtual clock it waits for ``clock.advance``, so ``drain`` must not wait for it. Calls come
    in pairs and never nest on one delivery.
    """

    def park(self) -> None: ...

    def unpark(self) -> None: ...


@runtime_checkable
class TransportTransaction(Protocol):
    """One native broker transaction, begun by :meth:`SupportsTransactions.begin_transaction`.

    ``publish`` stages a message (a RocketMQ half message, a Kafka transactional produce): no
    subscriber sees it before ``commit`` returns, and none ever does after ``rollback``. The
    core calls exactly one of ``commit``/``rollback``, once; ``commit`` returns only when the
    outcome is durable, and raises :class:`~unimq.errors.PublishError` when it is not (the
    transaction is then rolled back or left to the broker's check-back).
    """

    async def publish(self, message: OutgoingMessage) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...


@runtime_checkable
class SupportsTransactions(Protocol):
    """Transports with ``capabilities.transactions``."""

    async def begin_transaction(self) -> TransportTransaction: ...


@runtime_checkable
class SupportsTransactionalConsume(Protocol):
    """Transports whose transactions can also consume a delivery (Kafka: the consumed offset
    commits inside the producer transaction). Enables ``@subscriber(transactional=True)``.

    The returned transaction's ``commit`` makes the handler's staged publishes and the
    consumption of ``delivery`` durable together (or neither); the core still acks the
    delivery afterwards, which must then be harmless. ``rollback`` leaves ``delivery``
    unconsumed, so the core can run its handler again.
    """

    async def begin_consume_transaction(self, delivery: Delivery) -> TransportTransaction: ...


class ConsumeCommitRefused(PublishError):
    """A consume transaction's commit refused because this consumer's group membership changed
    meanwhile (Kafka: a rebalance bumped the generation, ``ILLEGAL_GENERATION``). Nothing of the
    attempt became visible, and the handler is not at fault: the core runs the attempt again
    without counting it, or drops the delivery when its partition went to another consumer.
    """


#: Answers a broker's check-back for a transaction whose producer vanished between staging and
#: commit (RocketMQ): ``True`` commits the staged message, ``False`` rolls it back. Given the
#: staged message as a :class:`Delivery` (its ``ack`` does nothing); the core decodes it into a
#: :class:`~unimq.message.Message` and calls the application's ``transaction_checker``.
TransactionCheck = Callable[["Delivery"], Awaitable[bool]]


@dataclass(frozen=True)
class TransportContext:
    """What the core hands a transport factory besides the URL and options.

    ``check_transaction`` is set when the application passed ``Broker(transaction_checker=...)``.
    """

    clock: Clock
    instance_id: str
    check_transaction: TransactionCheck | None = None


TransportFactory = Callable[[BrokerURL, Mapping[str, Any], TransportContext], Transport]


@runtime_checkable
class SupportsRewind(Protocol):
    """Transports with ``capabilities.rewind``: move a group back so that it consumes again what
    was published to ``topic`` at or after ``since`` (epoch seconds). Returns how many messages
    the group will consume again where the broker can tell (``None`` otherwise). ``dry_run``
    computes the same answer without moving anything.

    The group's position only ever moves back (a ``since`` later than where it stands changes
    nothing). Raises :class:`~unimq.errors.UnsupportedFeatureError` where this group's storage
    cannot (a RabbitMQ classic queue) and :class:`~unimq.errors.ConfigurationError` where the
    broker refuses while the group has running consumers (Kafka): stop them first.
    """

    async def rewind(
        self, topic: str, group: str, since: float, *, dry_run: bool = False
    ) -> int | None: ...


@runtime_checkable
class SupportsLag(Protocol):
    """Optional: how far behind a consumer group is (``unimq lag``, the metrics plugin)."""

    async def lag(self, topic: str, group: str) -> int | None:
        """Messages of ``topic`` that ``group`` has not consumed yet; ``None`` when the broker
        cannot tell (for example, the group has never subscribed).

        Each backend counts what its broker reports (RabbitMQ: ready messages in the group's
        queue; Kafka: end offset minus committed offset, summed over partitions; RocketMQ: the
        group's backlog; memory: ready plus unacked). With no consumer running, every backend
        reports exactly the number of messages published and not yet acked by the group.
        """


@runtime_checkable
class SupportsBacklogAge(Protocol):
    """Optional: how old the backlog of a consumer group is (``unimq lag``, the metrics plugin).

    The time dimension of :class:`SupportsLag`: alerts on a message count depend on the
    traffic; an age does not.
    """

    async def backlog_age(self, topic: str, group: str) -> float | None:
        """Seconds since the oldest message of ``topic`` that ``group`` has not consumed yet
        was published (``0.0`` with no backlog); ``None`` when the broker cannot tell."""


class DeadLetterSession(Protocol):
    """One pass over a dead-letter topic's messages, for ``unimq dlq`` (see :mod:`unimq.dlq`).

    The messages handed out by :meth:`next` are held by this session: :meth:`Delivery.ack`
    removes one from the dead-letter topic for good (after it was replayed, or to purge it);
    :meth:`close` gives back every message handed out and not acked, so it stays in the
    dead-letter topic. A crash in between never loses a message: what was not acked is given
    back by the broker (its lock, invisibility or offset was never moved on).
    """

    async def count(self) -> int:
        """How many dead letters the topic holds now; call it before :meth:`next`."""

    async def next(self) -> Delivery | None:
        """The next message not yet handed out in this session; ``None`` at the end (never
        waits for messages that arrive after the session was opened)."""

    async def close(self) -> None:
        """Give back what was handed out and not acked; idempotent."""


@runtime_checkable
class SupportsDeadLetters(Protocol):
    """Optional: browse and selectively remove the messages of a dead-letter topic.

    A dead-letter topic is an ordinary topic, but ``unimq dlq`` needs what a consumer group
    does not give: look without consuming, take out single messages, count them. Each backend
    keeps the dead letters where a session can reach them (memory and RabbitMQ: the holding
    store that :meth:`SupportsDeclareTopic.declare_topic` sets up; Kafka: the topic's log from
    the ``unimq.dlq`` group's committed offset; RocketMQ: the ``unimq-dlq`` consumer group).
    """

    async def open_dead_letters(self, topic: str) -> DeadLetterSession: ...
