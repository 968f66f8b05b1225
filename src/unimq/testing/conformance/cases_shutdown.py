"""Graceful shutdown: in-flight handlers finish, ``graceful_timeout`` bounds the wait."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ... import Message
from .cases_delivery import publish_many
from .support import BrokerFactory, Collector, Names


class ShutdownCases:
    async def test_shutdown_lets_in_flight_handlers_finish(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        started: Collector = collector()
        finished: Collector = collector()
        again: Collector = collector()
        broker = brokers()

        @broker.subscriber(names.topic(), group=names.group(), concurrency=4)
        async def slow(message: Message) -> None:
            started.add(message.id)
            await asyncio.sleep(0.5)
            finished.add(message.id)

        await broker.start()
        ids = await publish_many(broker, names.topic(), [b"x"] * 4)
        await started.wait_for(4)
        await broker.stop()
        assert sorted(finished.items) == sorted(ids), (
            "stop() returned before in-flight handlers finished"
        )

        successor = brokers()

        @successor.subscriber(names.topic(), group=names.group())
        async def handle(message: Message) -> None:
            again.add(message.id)

        await successor.start()
        await again.settle(1.0)
        assert again.items == [], "messages finished during shutdown were delivered again"

    async def test_graceful_timeout_bounds_shutdown(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        started: Collector = collector()
        redelivered: Collector = collector()
        broker = brokers(graceful_timeout=0.5)

        @broker.subscriber(names.topic(), group=names.group())
        async def stuck(message: Message) -> None:
            started.add(message.id)
            await asyncio.sleep(3600)

        await broker.start()
        receipt = await broker.publish(names.topic(), b"x")
        await started.wait_for(1)
        began = time.monotonic()
        await broker.stop()
        assert time.monotonic() - began < 10, "shutdown did not respect graceful_timeout"

        successor = brokers()

        @successor.subscriber(names.topic(), group=names.group())
        async def handle(message: Message) -> None:
            redelivered.add(message.id)

        await successor.start()
        assert await redelivered.wait_for(1, timeout=30) == [receipt.message_id]
