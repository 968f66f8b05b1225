"""``broker.transaction()`` and ``@subscriber(transactional=True)``, selected by capability.

Backends with native transactions (``Capabilities.transactions``: Kafka producer
transactions, RocketMQ half messages) must commit what a block staged and never deliver what
a failing block staged; backends without them must refuse with an
:class:`~unimq.UnsupportedFeatureError` that points to the transactional outbox. The cases
respect ``Capabilities.max_transaction_messages`` (RocketMQ's client: one message per
transaction), so every case passes on every backend that tells the truth about itself.
"""

from __future__ import annotations

from typing import Any

import pytest

from ... import ConfigurationError, Message, RetryPolicy, UnsupportedFeatureError
from ...broker import Broker
from ...transport import SupportsTransactionalConsume
from .features import requires
from .support import BrokerFactory, Collector, Names


class _Boom(Exception):
    """The block's own failure (what must roll the transaction back)."""


def _per_transaction(broker: Broker, wanted: int) -> int:
    """How many messages one transaction of this backend may hold, at most ``wanted``."""
    limit = broker.capabilities.max_transaction_messages
    return wanted if limit is None else min(wanted, limit)


async def _subscribed(broker: Broker, names: Names, seen: Collector) -> None:
    @broker.subscriber(names.topic(), group=names.group())
    async def collect(message: Message) -> None:
        seen.add(message.body)

    await broker.start()


class TransactionCases:
    @requires("transactions")
    async def test_transaction_commit_delivers(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()
        await _subscribed(broker, names, seen)
        count = _per_transaction(broker, 3)
        async with broker.transaction() as tx:
            for index in range(count):
                await tx.publish(names.topic(), f"committed-{index}".encode())
        await seen.wait_for(count, timeout=30)
        await seen.settle(0.5)
        assert sorted(seen.items) == [f"committed-{i}".encode() for i in range(count)]

    @requires("transactions")
    async def test_transaction_rollback_never_delivers(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()
        await _subscribed(broker, names, seen)
        count = _per_transaction(broker, 3)
        with pytest.raises(_Boom):
            async with broker.transaction() as tx:
                for index in range(count):
                    await tx.publish(names.topic(), f"rolled-back-{index}".encode())
                raise _Boom
        # A later committed message arrives; the rolled-back ones never do.
        async with broker.transaction() as tx:
            await tx.publish(names.topic(), b"after")
        await seen.wait_for(1, timeout=30)
        await seen.settle(1.0)
        assert seen.items == [b"after"], "a rolled-back transaction's messages were delivered"

    @requires("transactions")
    async def test_transaction_invalid_publish_raises_before_staging(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()
        await _subscribed(broker, names, seen)
        async with broker.transaction() as tx:
            with pytest.raises(ConfigurationError):
                await tx.publish("", b"no topic")
            with pytest.raises(ConfigurationError):
                await tx.publish(names.topic(), b"x", headers={"": "empty name"})
            # Nothing was staged: a backend holding one message per transaction still has room.
            await tx.publish(names.topic(), b"valid")
        await seen.wait_for(1, timeout=30)
        await seen.settle(0.5)
        assert seen.items == [b"valid"]

    @requires("transactions")
    async def test_transaction_message_limit_is_enforced(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        broker = brokers()
        limit = broker.capabilities.max_transaction_messages
        if limit is None:
            pytest.skip("this backend's transactions hold any number of messages")
        seen: Collector = collector()
        await _subscribed(broker, names, seen)
        async with broker.transaction() as tx:
            for index in range(limit):
                await tx.publish(names.topic(), f"m-{index}".encode())
            with pytest.raises(UnsupportedFeatureError, match="at most"):
                await tx.publish(names.topic(), b"one too many")
        await seen.wait_for(limit, timeout=30)
        await seen.settle(0.5)
        assert sorted(seen.items) == [f"m-{i}".encode() for i in range(limit)]

    async def test_transaction_refused_without_native_transactions(
        self, brokers: BrokerFactory, names: Names
    ) -> None:
        broker = brokers()
        if broker.capabilities.transactions:
            pytest.skip("this backend has native transactions")
        await broker.connect()
        with pytest.raises(UnsupportedFeatureError, match="outbox"):
            broker.transaction()

    async def test_transactional_subscriber_refused_where_unsupported(
        self, brokers: BrokerFactory, names: Names
    ) -> None:
        broker = brokers()
        if isinstance(broker.transport, SupportsTransactionalConsume):
            pytest.skip("this backend commits a consumed message in a transaction")
        declare = broker.subscriber(
            names.topic(), group=names.group(), concurrency=1, transactional=True
        )

        async def refused(message: Message) -> None: ...

        with pytest.raises(UnsupportedFeatureError, match="transactional=True"):
            declare(refused)

    @requires(SupportsTransactionalConsume)
    async def test_transactional_handler_outputs_once_despite_failures(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        """Every input fails once after publishing: the failed attempt's output is rolled
        back, the retry's commits with the input's consumption, so each output once. A commit
        a rebalance refused re-runs the attempt without counting it, so no input needs a third
        attempt (``max_attempts=2`` would dead-letter it)."""
        outputs: Collector = collector()
        broker = brokers()
        attempts: dict[str, set[int]] = {}

        @broker.subscriber(
            names.topic("in"),
            group=names.group("transform"),
            concurrency=1,
            transactional=True,
            retry=RetryPolicy(max_attempts=2, backoff=lambda attempt: 0.01),
        )
        async def transform(message: Message) -> None:
            await broker.publish(names.topic("out"), message.body, message_id=f"out-{message.id}")
            attempts.setdefault(message.id, set()).add(message.attempt)
            if message.attempt == 1:
                raise _Boom("after the publish: it must not be seen")

        @broker.subscriber(names.topic("out"), group=names.group("reader"))
        async def read(message: Message) -> None:
            outputs.add(message.id)

        await broker.start()
        inputs = [(await broker.publish(names.topic("in"), b"x")).message_id for _ in range(20)]
        await outputs.wait_for(20, timeout=120)  # a transaction per attempt: slow when loaded
        await outputs.settle(1.0)
        assert sorted(outputs.items) == sorted(f"out-{i}" for i in inputs)
        assert all(seen == {1, 2} for seen in attempts.values()), attempts
