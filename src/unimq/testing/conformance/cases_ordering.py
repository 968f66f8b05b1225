"""Per-key ordering of ``ordered=True`` subscribers (refused where the backend has none)."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from ... import Message, RetryPolicy, UnsupportedFeatureError, fixed
from .features import requires
from .support import Backend, BrokerFactory, Collector, Names


async def pause(turns: int) -> None:
    """Give the event loop ``turns`` turns (deterministic "random timing")."""
    for _ in range(turns):
        await asyncio.sleep(0)


class OrderingCases:
    async def test_ordered_is_refused_without_the_capability(
        self, brokers: BrokerFactory, names: Names
    ) -> None:
        broker = brokers()
        if broker.capabilities.ordering:
            pytest.skip("the backend offers ordering (its cases run instead)")
        with pytest.raises(UnsupportedFeatureError):

            @broker.subscriber(names.topic(), group=names.group(), ordered=True)
            async def refused(message: Message) -> None: ...

    @requires("ordering")
    async def test_same_key_in_order_different_keys_concurrently(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        broker = brokers()
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

    @requires("ordering")
    async def test_ordered_retry_in_place_keeps_order(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
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

    # Publishing while the subscriber runs: the cases above publish faster than the handler
    # works, so deliveries mostly wait in the broker; here each publish is awaited while
    # workers are idle and waiting in receive(), the case that exposes a delivery handed to a
    # waiting receiver being overtaken by a later one.

    @requires("ordering")
    async def test_hot_key_published_while_the_subscriber_runs_stays_in_order(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()

        @broker.subscriber(names.topic(), group=names.group(), ordered=True, concurrency=8)
        async def handle(message: Message) -> None:
            seen.add(int(message.body))

        await broker.start()
        for n in range(20):
            await broker.publish(names.topic(), str(n).encode(), key="hot")
        await seen.wait_for(20, timeout=30)
        await seen.settle(0.3)
        assert seen.items == list(range(20)), f"one key, concurrency=8: {seen.items}"

    @requires("ordering")
    async def test_keys_stay_in_order_with_random_handler_timings(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        """Several keys, one of them hot, handlers taking random time, publishes interleaved
        with handling (some awaited one by one, some in bursts), for a few seeds.

        The pauses are event-loop turns, not wall time, so on an in-process backend a seed
        replays the same interleaving; on a real broker the network adds its own.
        """
        broker = brokers()
        rounds = {seed: collector() for seed in range(1, 7)}
        for seed, seen in rounds.items():

            def make(seen: Collector, chance: random.Random) -> Any:
                async def handle(body: dict[str, Any], message: Message) -> None:
                    await pause(chance.choice([0, 0, 1, 3, 10]))
                    seen.add((message.key, body["n"]))

                return handle

            broker.subscriber(
                names.topic(f"r{seed}"), group=names.group(), ordered=True, concurrency=6
            )(make(seen, random.Random(-seed)))
        await broker.start()
        for seed, seen in rounds.items():
            chance = random.Random(seed)
            topic = names.topic(f"r{seed}")
            plan = [("hot", n) for n in range(30)] + [(k, n) for k in "abc" for n in range(10)]
            chance.shuffle(plan)
            counters: dict[str, int] = {}
            burst: list[Any] = []
            for key, _ in plan:
                n = counters[key] = counters.get(key, -1) + 1
                burst.append(broker.publish(topic, {"n": n}, key=key))
                if chance.random() < 0.6:
                    for publish in burst:  # in order: one key's publishes are never concurrent
                        await publish
                    burst.clear()
                    await pause(chance.choice([0, 1, 5, 20]))
            for publish in burst:
                await publish
            await seen.wait_for(len(plan), timeout=30)
            await seen.settle(0.2)
            for key, count in counters.items():
                got = [n for k, n in seen.items if k == key]
                assert got == list(range(count + 1)), f"key {key!r} (seed {seed}): {got}"

    @requires("ordering")
    async def test_hot_key_does_not_block_other_keys(
        self, backend: Backend, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        """With slots free, a key waits for nobody but its own earlier messages."""
        seen: Collector = collector()
        broker = brokers()

        @broker.subscriber(names.topic(), group=names.group(), ordered=True, concurrency=4)
        async def handle(message: Message) -> None:
            if message.key == "hot":
                await asyncio.sleep(0.05)
            seen.add((message.key, time.monotonic()))

        await broker.start()
        for n in range(20):
            await broker.publish(names.topic(), str(n).encode(), key="hot")
        published = time.monotonic()
        await broker.publish(names.topic(), b"other", key="cold")
        await seen.wait_for(21, timeout=30)
        [(_, handled)] = [item for item in seen.items if item[0] == "cold"]
        waited = handled - published
        position = [key for key, _ in seen.items].index("cold")
        # 20 hot messages take >= 1 s one after the other; the cold key must not queue
        # behind them (allowing the broker's own latency).
        assert waited < 0.25 * backend.time_scale + 0.2, (
            f"the cold key waited {waited:.2f}s behind the hot key (handled {position + 1}th)"
        )
