"""Delayed delivery, per-key ordering, idempotency, graceful shutdown."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from ... import Message, RetryPolicy, UnsupportedFeatureError, fixed
from .cases_delivery import publish_many
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


class OrderingCases:
    async def test_same_key_in_order_different_keys_concurrently(
        self, backend: Backend, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        broker = brokers()
        if not backend.ordering:
            with pytest.raises(UnsupportedFeatureError):

                @broker.subscriber(names.topic(), group=names.group(), ordered=True)
                async def refused(message: Message) -> None: ...

            return
        seen: Collector = collector()
        running: set[str] = set()
        overlap: list[str] = []
        keys_at_once = 0

        @broker.subscriber(names.topic(), group=names.group(), ordered=True, concurrency=8)
        async def handle(body: dict[str, Any], message: Message) -> None:
            nonlocal keys_at_once
            key = message.key
            assert key is not None
            if key in running:
                overlap.append(key)
            running.add(key)
            keys_at_once = max(keys_at_once, len(running))
            await asyncio.sleep(0.01)
            running.discard(key)
            seen.add((key, body["n"]))

        await broker.start()
        for n in range(30):
            for key in ("a", "b", "c", "d"):
                await broker.publish(names.topic(), {"n": n}, key=key)
        await seen.wait_for(120, timeout=60)
        assert not overlap, f"two messages of one key ran at once: {overlap[:5]}"
        for key in ("a", "b", "c", "d"):
            assert [n for k, n in seen.items if k == key] == list(range(30)), key
        assert keys_at_once > 1, "different keys should run concurrently"

    async def test_ordered_retry_in_place_keeps_order(
        self, backend: Backend, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        if not backend.ordering:
            pytest.skip("backend declares no ordering (refusal checked in the ordering case)")
        seen: Collector = collector()
        broker = brokers()

        @broker.subscriber(
            names.topic(),
            group=names.group(),
            ordered=True,
            retry=RetryPolicy(max_attempts=3, backoff=fixed(0.2)),
        )
        async def handle(body: dict[str, int], message: Message) -> None:
            seen.add((body["n"], message.attempt))
            if body["n"] == 1 and message.attempt < 3:
                raise RuntimeError("transient")

        await broker.start()
        for n in range(4):
            await broker.publish(names.topic(), {"n": n}, key="one-key")
        await seen.wait_for(6, timeout=20)
        assert seen.items == [(0, 1), (1, 1), (1, 2), (1, 3), (2, 1), (3, 1)]


class IdempotencyCases:
    async def test_duplicate_id_is_handled_once(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()

        @broker.subscriber(names.topic(), group=names.group(), idempotent=True)
        async def handle(message: Message) -> None:
            seen.add(message.id)

        await broker.start()
        for _ in range(3):
            await broker.publish(names.topic(), b"x", message_id="dup-1")
        await broker.publish(names.topic(), b"x", message_id="other")
        await seen.wait_for(2)
        await seen.settle(0.5)
        assert sorted(seen.items) == ["dup-1", "other"]

    async def test_concurrent_duplicates_run_once(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()

        @broker.subscriber(names.topic(), group=names.group(), idempotent=True, concurrency=8)
        async def slow(message: Message) -> None:
            seen.add(message.id)
            await asyncio.sleep(0.3)

        await broker.start()
        await asyncio.gather(
            *(broker.publish(names.topic(), b"x", message_id="same") for _ in range(5))
        )
        await seen.wait_for(1)
        await seen.settle(1.0)
        assert seen.items == ["same"]

    async def test_failed_run_leaves_no_mark(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()

        @broker.subscriber(
            names.topic(),
            group=names.group(),
            idempotent=True,
            retry=RetryPolicy(max_attempts=3, backoff=fixed(0.1)),
        )
        async def handle(message: Message) -> None:
            seen.add(message.attempt)
            if message.attempt == 1:
                raise RuntimeError("fails first")

        await broker.start()
        await broker.publish(names.topic(), b"x", message_id="retry-me")
        await seen.wait_for(2)
        await broker.publish(names.topic(), b"x", message_id="retry-me")  # now a duplicate
        await seen.settle(0.5)
        assert seen.items == [1, 2]


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
