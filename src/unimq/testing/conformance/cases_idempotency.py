"""``idempotent=True``: a message id is handled once per group, failures leave no mark."""

from __future__ import annotations

import asyncio
from typing import Any

from ... import Message, RetryPolicy, fixed
from .support import BrokerFactory, Collector, Names


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
