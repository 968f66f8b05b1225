"""``kafka://host:port[,host:port]``: the Kafka transport (confluent-kafka / librdkafka).

Ties the pieces together: one idempotent producer per transport (producer.py), one consumer
thread per subscription (consumer.py, subscription.py) committing only contiguous
acknowledged offsets (offsets.py), topics created on demand (admin.py) and delays through
tier topics and a scheduler (delay.py); consumer lag and dead-letter sessions read group
offsets without joining (positions.py, dead_letters.py). See docs/backends/kafka.md for the
semantics table.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from typing import Any, overload

from unimq.errors import NotConnectedError, UnsupportedFeatureError
from unimq.transport import (
    Capabilities,
    Delivery,
    OutgoingMessage,
    SubscriptionSpec,
    TransportContext,
)
from unimq.url import BrokerURL

from . import security
from .admin import TopicAdmin
from .consumer import CONSUMER_DEFAULTS
from .dead_letters import KafkaDeadLetters, open_dead_letters
from .delay import TIER_RETENTION_MS, DelayRouter, DelayScheduler, delay_headers
from .headers import to_wire, to_wire_dict
from .names import check_topic
from .options import MAX_MESSAGE_SIZE, MAX_RECORD_BYTES, KafkaSettings, parse_settings
from .positions import group_spans
from .producer import KafkaProducer
from .rewind import backlog_age, rewind_group
from .subscription import KafkaDelivery, KafkaSubscription
from .transactions import KafkaTransaction, TransactionalProducer, consumed_offsets

logger = logging.getLogger("unimq.kafka")

CAPABILITIES = Capabilities(
    max_delay=None,  # any delay, through the tier topics (multi-hop)
    ordering=True,
    broadcast=True,
    durable=True,
    max_message_size=MAX_MESSAGE_SIZE,
    # Deliveries of a revoked or lost partition say so (subscription.KafkaDelivery.revoked).
    revocable=True,
    # Producer transactions (transactions.py); any number of messages per transaction.
    transactions=True,
    # Offsets by timestamp (list_offsets) + a commit of the group's offsets (rewind.py).
    rewind=True,
)

#: A message due this close to now is published straight to its topic (the core holds it).
_DIRECT_WITHIN = 0.005


class KafkaTransport:
    capabilities = CAPABILITIES

    def __init__(
        self, url: BrokerURL, options: Mapping[str, Any], context: TransportContext
    ) -> None:
        self.settings: KafkaSettings = parse_settings(url, options)
        self._context = context
        self._admin: TopicAdmin | None = None
        self._producer: KafkaProducer | None = None
        self._transactional: TransactionalProducer | None = None  # on first transaction
        self._subscriptions: list[tuple[KafkaSubscription, SubscriptionSpec]] = []
        self._router = DelayRouter(self.settings.delay_tiers)
        self._scheduler: DelayScheduler | None = None
        self._scheduler_lock = asyncio.Lock()
        self._connected = False

    def __repr__(self) -> str:
        return f"<KafkaTransport {self.settings.url}>"

    # -- lifecycle -------------------------------------------------------------------------

    async def connect(self) -> None:
        if self._connected:
            return
        settings = self.settings
        security.warn_if_unverified(settings.common, settings.url)
        admin = TopicAdmin(
            settings.admin_config(),
            url=settings.url,
            num_partitions=settings.num_partitions,
            replication_factor=settings.replication_factor,
            topic_config={"max.message.bytes": str(MAX_RECORD_BYTES)},
        )
        await admin.check_connection()
        producer = KafkaProducer(settings.producer_config(), MAX_RECORD_BYTES)
        producer.start(asyncio.get_running_loop())
        self._admin, self._producer = admin, producer
        self._connected = True

    async def close(self) -> None:
        self._connected = False
        subscriptions, self._subscriptions = self._subscriptions, []
        if subscriptions:
            await asyncio.gather(*(sub.close() for sub, _ in subscriptions))
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            await scheduler.close()
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.close()
        transactional, self._transactional = self._transactional, None
        if transactional is not None:
            await transactional.close()
        admin = self._admin
        if admin is not None:
            for _, spec in subscriptions:
                if spec.broadcast and spec.role == "retry":
                    await admin.delete(spec.topic)  # this instance's own retry topic
        self._admin = None

    # -- publishing ------------------------------------------------------------------------

    def publish(self, message: OutgoingMessage) -> Coroutine[Any, Any, None]:
        """The SPI's ``publish``, awaited like a coroutine function: for a message to a topic
        already known and not delayed (nearly every publish) it hands back the producer's
        ``send`` coroutine itself, one coroutine frame fewer per awaited publish; the rest
        goes through :meth:`_publish`."""
        admin, producer = self._admin, self._producer
        if admin is None or producer is None or not self._connected:
            raise NotConnectedError("the kafka transport is not connected")
        topic = message.topic
        if message.deliver_at is not None or not admin.known(topic):
            return self._publish(message, admin, producer)
        key = message.key
        # The dict as it is (the client encodes its text values): no per-message copy here,
        # unless a NUL character needs the headers packed (see headers.py).
        wire = to_wire_dict(message.headers)
        return producer.send(
            topic, message.body, key.encode() if key is not None else None, wire or None
        )

    async def _publish(
        self, message: OutgoingMessage, admin: TopicAdmin, producer: KafkaProducer
    ) -> None:
        topic = message.topic
        if not admin.known(topic):
            await admin.ensure(topic)
        key = message.key.encode() if message.key is not None else None
        deliver_at = message.deliver_at
        if deliver_at is not None:
            now = time.time()
            if deliver_at - now > _DIRECT_WITHIN:
                tier, release = self._router.route(deliver_at, now)
                await self._ensure_scheduler()
                headers = delay_headers(message.headers, topic, deliver_at, release)
                await producer.send(tier, message.body, key, headers)
                return
        await producer.send(topic, message.body, key, to_wire_dict(message.headers) or None)

    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> list[BaseException | None]:
        """``SupportsPublishMany``: produce every message in order, then one wait for all the
        delivery reports (the way librdkafka is meant to be fed). Delayed messages go through
        ``publish`` one by one, in order after the others were queued."""
        admin, producer = self._admin, self._producer
        if admin is None or producer is None or not self._connected:
            raise NotConnectedError("the kafka transport is not connected")
        columns = _Columns()
        topics_of, bodies, keys, wires = columns.columns
        delayed: list[int] = []
        topics: set[str] = set()
        for index, message in enumerate(messages):  # once: the view builds each as it is read
            if message.deliver_at is not None:
                delayed.append(index)
                continue
            topic, key = message.topic, message.key
            topics.add(topic)
            topics_of.append(topic)
            bodies.append(message.body)
            keys.append(key.encode() if key is not None else None)
            wires.append(to_wire_dict(message.headers))
        for topic in topics:
            if not admin.known(topic):
                await admin.ensure(topic)
        results = await producer.send_many(columns)
        if not delayed:
            return results
        out: list[BaseException | None] = []
        direct = iter(results)
        waiting = set(delayed)
        for index in range(len(messages)):
            out.append(None if index in waiting else next(direct))
        for index in delayed:
            try:
                await self.publish(messages[index])
            except Exception as exc:
                out[index] = exc
        return out

    async def publish_bodies(
        self,
        topic: str,
        bodies: Sequence[bytes],
        key: str | None,
        headers: Mapping[str, str],
        id_header: str,
        ids: Sequence[str],
    ) -> list[BaseException | None]:
        """``SupportsPublishBodies``: ``publish_batch`` of plain bodies. The records are those
        ``publish_many`` sends for the same items (tests/test_kafka_publish_fast.py compares
        them): the headers go through ``to_wire`` once for the batch (an id is a UUID, it never
        needs packing) and each record gets its id swapped in; the key is encoded once."""
        admin, producer = self._admin, self._producer
        if admin is None or producer is None or not self._connected:
            raise NotConnectedError("the kafka transport is not connected")
        if not admin.known(topic):
            await admin.ensure(topic)
        wire: dict[str, str | bytes] = dict(to_wire(headers))  # a copy: send_each fills it in
        return await producer.send_each(
            topic, bodies, key.encode() if key is not None else None, wire, id_header, ids
        )

    # -- transactions (SupportsTransactions, SupportsTransactionalConsume) -------------------

    async def begin_transaction(self) -> KafkaTransaction:
        """A producer transaction on the transport's transactional producer (transactions.py)."""
        admin = self._admin
        if admin is None or not self._connected:
            raise NotConnectedError("the kafka transport is not connected")
        if self._transactional is None:
            self._transactional = TransactionalProducer(
                self.settings.producer_config(),
                self.settings.transactional_id or f"unimq-tx-{self._context.instance_id}",
            )
        return await self._transactional.begin(self._ensure_topic)

    async def begin_consume_transaction(self, delivery: Delivery) -> KafkaTransaction:
        """A transaction that also commits ``delivery``'s offset for its group
        (consume-transform-produce: exactly once for read_committed readers)."""
        if not isinstance(delivery, KafkaDelivery):
            raise UnsupportedFeatureError(
                f"a kafka transaction can only consume a kafka delivery, not {delivery!r}"
            )
        delivery.group_metadata()  # no consumer to commit with: fail before the handler runs
        transaction = await self.begin_transaction()
        transaction.consumed = consumed_offsets(
            delivery.topic, delivery.partition, delivery.offset, delivery.group_metadata
        )
        return transaction

    async def _ensure_topic(self, topic: str) -> None:
        admin = self._admin
        if admin is None:
            raise NotConnectedError("the kafka transport is not connected")
        if not admin.known(topic):
            await admin.ensure(check_topic(topic))

    async def _send(
        self, topic: str, body: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        """The scheduler's way out: to a destination or the next tier."""
        admin, producer = self._admin, self._producer
        if admin is None or producer is None:
            raise NotConnectedError("the kafka transport is not connected")
        await admin.ensure(topic)
        await producer.send(topic, body, key, headers)

    async def _ensure_scheduler(self) -> None:
        if self._scheduler is not None:
            return
        async with self._scheduler_lock:
            if self._scheduler is not None or self._admin is None:
                return
            admin = self._admin
            await asyncio.gather(
                *(
                    admin.ensure(topic, config={"retention.ms": str(TIER_RETENTION_MS)})
                    for topic in self._router.topics.values()
                )
            )
            scheduler = DelayScheduler(
                self._router, self._send, self._consumer_config(), self.settings.revoke_timeout
            )
            await scheduler.start()
            self._scheduler = scheduler

    # -- subscribing -----------------------------------------------------------------------

    async def declare_topic(self, topic: str) -> None:
        admin = self._admin
        if admin is None:
            raise NotConnectedError("the kafka transport is not connected")
        await admin.ensure(check_topic(topic))

    async def subscribe(self, spec: SubscriptionSpec) -> KafkaSubscription:
        admin = self._admin
        if admin is None or not self._connected:
            raise NotConnectedError("the kafka transport is not connected")
        check_topic(spec.topic)
        await admin.ensure(spec.topic)
        await admin.check_read(spec.topic, spec.group)
        await self._ensure_scheduler()  # retry backoffs and delayed publishes need it
        config = {
            **self._consumer_config(),
            "group.id": spec.group,
            # New groups read what was published before they first joined (at-least-once);
            # a broadcast subscription is this instance's alone and starts at the log end.
            "auto.offset.reset": "latest" if spec.broadcast else "earliest",
        }
        subscription = KafkaSubscription(
            config,
            [spec.topic],
            prefetch=spec.prefetch,
            name=f"unimq-kafka:{spec.topic}:{spec.group}",
            revoke_timeout=self.settings.revoke_timeout,
            manual_latest=spec.broadcast,
            # A transactional subscriber's offsets commit only in its transactions.
            commits=not spec.transactional,
        )
        await subscription.start()
        self._subscriptions.append((subscription, spec))
        return subscription

    # -- operations (SupportsLag, SupportsDeadLetters) --------------------------------------

    async def lag(self, topic: str, group: str) -> int | None:
        """Sum over the partitions of log end minus ``group``'s committed offset (the earliest
        retained offset where it has none, as a new group starts there); ``None`` if the topic
        does not exist. See docs/backends/kafka.md."""
        admin = self._admin
        if admin is None or not self._connected:
            raise NotConnectedError("the kafka transport is not connected")
        config = self._consumer_config()
        spans = await asyncio.to_thread(group_spans, admin, config, topic, group)
        return None if spans is None else sum(span.backlog for span in spans)

    async def backlog_age(self, topic: str, group: str) -> float | None:
        """The timestamp of the record at ``group``'s position, oldest over the partitions
        where it is behind (rewind.py)."""
        admin = self._admin
        if admin is None or not self._connected:
            raise NotConnectedError("the kafka transport is not connected")
        config = self._consumer_config()
        return await asyncio.to_thread(backlog_age, admin, config, topic, group)

    async def rewind(
        self, topic: str, group: str, since: float, *, dry_run: bool = False
    ) -> int | None:
        """Commit ``group``'s offsets back to the first record at or after ``since``; refused
        while the group has members (rewind.py)."""
        admin = self._admin
        if admin is None or not self._connected:
            raise NotConnectedError("the kafka transport is not connected")
        config = self._consumer_config()
        return await asyncio.to_thread(
            rewind_group, admin, config, topic, group, since, dry_run=dry_run
        )

    async def open_dead_letters(self, topic: str) -> KafkaDeadLetters:
        admin, producer = self._admin, self._producer
        if admin is None or producer is None or not self._connected:
            raise NotConnectedError("the kafka transport is not connected")
        return await open_dead_letters(topic, admin, producer, self._consumer_config())

    def _consumer_config(self) -> dict[str, Any]:
        return {
            **CONSUMER_DEFAULTS,
            **self.settings.consumer_config(),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        }


class _Columns(Sequence[tuple[str, bytes, "bytes | None", Any]]):
    """``send_many``'s items as four lists (topic, body, key, headers) rather than a tuple per
    item: the tuples would hold a ``dict`` each, so the collector would track and keep scanning
    every one of them for as long as the batch waits for its reports. Iterating yields each
    item's tuple for the moment it is used."""

    __slots__ = ("columns",)

    def __init__(self) -> None:
        self.columns: tuple[list[str], list[bytes], list[bytes | None], list[Any]] = (
            [],
            [],
            [],
            [],
        )

    def __len__(self) -> int:
        return len(self.columns[0])

    @overload
    def __getitem__(self, index: int) -> tuple[str, bytes, bytes | None, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[tuple[str, bytes, bytes | None, Any]]: ...

    def __getitem__(
        self, index: int | slice
    ) -> tuple[str, bytes, bytes | None, Any] | list[tuple[str, bytes, bytes | None, Any]]:
        topics, bodies, keys, wires = self.columns
        if isinstance(index, slice):
            return list(zip(topics[index], bodies[index], keys[index], wires[index], strict=True))
        return topics[index], bodies[index], keys[index], wires[index]

    def __iter__(self) -> Iterator[tuple[str, bytes, bytes | None, Any]]:
        return zip(*self.columns, strict=True)
