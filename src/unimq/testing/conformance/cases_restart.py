"""Durability across a broker restart (skipped, with the reason, where there is no restart)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ... import Message
from .cases_delivery import publish_many
from .features import requires
from .support import Backend, BrokerFactory, Collector, Names


class RestartCases:
    # The marker goes on each case, not the class: marks on a base class are inherited by
    # every subclass, which would mark the whole ConformanceSuite.
    @pytest.mark.requires_restart
    @requires("restart")
    async def test_published_message_survives_restart(
        self, backend: Backend, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        assert backend.restart is not None
        seen: Collector = collector()
        declare = brokers()

        @declare.subscriber(names.topic(), group=names.group())
        async def declare_only(message: Message) -> None:
            raise AssertionError("not started")

        await declare.connect()
        await declare.start()
        await declare.stop()
        producer = brokers()
        await producer.connect()
        receipt = await producer.publish(names.topic(), b"durable")
        await producer.stop()
        await backend.restart()
        consumer = brokers()

        @consumer.subscriber(names.topic(), group=names.group())
        async def handle(message: Message) -> None:
            seen.add(message.id)

        await consumer.start()
        assert receipt.message_id in await seen.wait_for(1, timeout=60)

    @pytest.mark.requires_restart
    @requires("restart")
    async def test_delayed_message_survives_restart(
        self, backend: Backend, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        assert backend.restart is not None
        seen: Collector = collector()
        broker = brokers()

        @broker.subscriber(names.topic(), group=names.group())
        async def handle(message: Message) -> None:
            seen.add(message.id)

        await broker.start()
        receipt = await broker.publish(names.topic(), b"later", delay=5)
        await broker.stop()
        await backend.restart()
        successor = brokers()

        @successor.subscriber(names.topic(), group=names.group())
        async def handle_after(message: Message) -> None:
            seen.add(message.id)

        await successor.start()
        assert receipt.message_id in await seen.wait_for(1, timeout=90)

    @pytest.mark.requires_restart
    @requires("restart")
    async def test_in_flight_messages_survive_restart(
        self, backend: Backend, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        assert backend.restart is not None
        seen: Collector = collector()
        broker = brokers()

        @broker.subscriber(names.topic(), group=names.group(), concurrency=8)
        async def handle(message: Message) -> None:
            await asyncio.sleep(0.01)
            seen.add(message.id)

        await broker.start()
        ids = await publish_many(broker, names.topic(), [b"x"] * 500)
        await seen.wait_for(50, timeout=60)
        await backend.restart()
        await seen.wait_for_all(set(ids), timeout=180)  # redeliveries may duplicate, never lose
