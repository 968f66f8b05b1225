"""Delayed delivery: ``delay=``, ``deliver_at=``, and delays never blocking other messages."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from ... import Message
from .support import Backend, BrokerFactory, Collector, Names

#: How late a delayed message may arrive (DESIGN.md: within 1 s on real brokers), plus slack
#: for a loaded CI machine.
LATENESS = 1.5


class DelayCases:
    async def test_delay_is_honoured(
        self, backend: Backend, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()

        @broker.subscriber(names.topic(), group=names.group())
        async def handle(message: Message) -> None:
            seen.add(time.time())

        await broker.start()
        published = time.time()
        receipt = await broker.publish(names.topic(), b"x", delay=timedelta(seconds=2))
        assert receipt.deliver_at is not None
        [arrived] = await seen.wait_for(1, timeout=10)
        assert arrived - published >= 2.0 - 0.05, (
            f"arrived {arrived - published:.2f}s after a 2s delay"
        )
        assert arrived - published <= 2.0 + LATENESS * backend.time_scale

    async def test_deliver_at_is_honoured(
        self, backend: Backend, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()

        @broker.subscriber(names.topic(), group=names.group())
        async def handle(message: Message) -> None:
            seen.add(time.time())

        await broker.start()
        due = datetime.now(timezone.utc) + timedelta(seconds=1.5)
        await broker.publish(names.topic(), b"x", deliver_at=due)
        [arrived] = await seen.wait_for(1, timeout=10)
        assert arrived >= due.timestamp() - 0.05
        assert arrived <= due.timestamp() + LATENESS * backend.time_scale

    async def test_delayed_message_does_not_block_others(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()

        @broker.subscriber(names.topic(), group=names.group(), concurrency=1)
        async def handle(body: str) -> None:
            seen.add(body)

        await broker.start()
        await broker.publish(names.topic(), "later", delay=1.5)
        await broker.publish(names.topic(), "now")
        assert await seen.wait_for(2, timeout=10) == ["now", "later"]

    async def test_float_seconds_delay_and_bad_delays(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()

        @broker.subscriber(names.topic(), group=names.group())
        async def handle(body: str) -> None:
            seen.add(body)

        await broker.start()
        from ... import ConfigurationError

        with pytest.raises(ConfigurationError):
            await broker.publish(names.topic(), "x", delay=-1)
        with pytest.raises(ConfigurationError):
            await broker.publish(names.topic(), "x", delay=1, deliver_at=datetime.now(timezone.utc))
        with pytest.raises(ConfigurationError):
            await broker.publish(names.topic(), "x", deliver_at=datetime.now())  # naive
        await broker.publish(names.topic(), "float", delay=0.5)
        assert await seen.wait_for(1) == ["float"]
