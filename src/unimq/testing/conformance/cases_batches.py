"""``publish_batch`` and batch subscribers (``batch=BatchPolicy(...)``): each message of a batch
keeps its own fate on every backend: success acks all, ``BatchFailed`` fails only the named
messages, an undecodable body is dead-lettered alone, ``ordered=True`` keeps per-key order
inside and across batches, ``idempotent=True`` drops known ids before the call."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from ... import BatchFailed, BatchPolicy, Message, Outgoing, Reject, RetryPolicy, fixed
from ... import headers as h
from ...errors import ConfigurationError
from .cases_retry import dlq_reader
from .features import requires
from .support import BrokerFactory, Collector, Names

QUICK = RetryPolicy(max_attempts=3, backoff=fixed(0.2))


class Item(BaseModel):
    n: int


class BatchCases:
    async def test_publish_batch_delivers_every_item_to_a_batch_handler(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        sizes: list[int] = []
        broker = brokers()

        @broker.subscriber(
            names.topic(), group=names.group(), batch=BatchPolicy(max_size=10, max_wait=0.2)
        )
        async def handle(items: list[Item], messages: list[Message]) -> None:
            sizes.append(len(items))
            for item, message in zip(items, messages, strict=True):
                seen.add((item.n, message.id, message.key, message.headers.get("tenant")))

        await broker.start()
        items: list[Any] = [Item(n=n) for n in range(20)]
        items.append(Outgoing(Item(n=20), key="k-20", headers={"tenant": "own"}, message_id="m20"))
        receipts = await broker.publish_batch(names.topic(), items, headers={"tenant": "acme"})
        assert len(receipts) == 21
        assert receipts[20].message_id == "m20"
        assert len({r.message_id for r in receipts}) == 21
        await seen.wait_for(21)
        await seen.settle(0.5)
        assert sorted(n for n, *_ in seen.items) == list(range(21))  # each once: acked
        by_n = {n: (mid, key, tenant) for n, mid, key, tenant in seen.items}
        assert by_n[20] == ("m20", "k-20", "own")
        assert all(by_n[n] == (receipts[n].message_id, None, "acme") for n in range(20))
        assert max(sizes) <= 10

    async def test_publish_batch_checks_every_item_before_sending_any(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()

        @broker.subscriber(names.topic(), group=names.group())
        async def handle(message: Message) -> None:
            seen.add(message.body)

        await broker.start()
        with pytest.raises(ConfigurationError, match="item 1"):
            await broker.publish_batch(names.topic(), [b"a", Outgoing(b"b", message_id=""), b"c"])
        await broker.publish(names.topic(), b"after")
        await seen.wait_for(1)
        await seen.settle(0.5)
        assert seen.items == [b"after"]

    async def test_batch_failed_retries_and_dead_letters_only_the_named_messages(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        dead: Collector = collector()
        broker = brokers()

        @broker.subscriber(
            names.topic(),
            group=names.group(),
            retry=QUICK,
            batch=BatchPolicy(max_size=10, max_wait=0.3),
        )
        async def handle(items: list[Item], messages: list[Message]) -> None:
            failures: dict[int, BaseException] = {}
            for index, (item, message) in enumerate(zip(items, messages, strict=True)):
                seen.add((item.n, message.attempt))
                if item.n == 1 and message.attempt == 1:
                    failures[index] = ConnectionError("n=1 fails once")
                if item.n == 2:
                    failures[index] = Reject("n=2 is rejected")
            if failures:
                raise BatchFailed(failures)

        dlq_reader(broker, f"{names.topic()}.{names.group()}.dlq", names.group("ops"), dead)
        await broker.start()
        await broker.publish_batch(names.topic(), [Item(n=n) for n in range(4)])
        [letter] = await dead.wait_for(1)
        await seen.wait_for(5)
        await seen.settle(0.5)
        assert sorted(seen.items) == [(0, 1), (1, 1), (1, 2), (2, 1), (3, 1)]
        assert letter.body == b'{"n":2}'
        assert letter.headers[h.DLQ_REASON] == "rejected"
        assert len(dead) == 1

    async def test_an_exception_retries_every_message_of_the_batch(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()

        @broker.subscriber(
            names.topic(),
            group=names.group(),
            retry=QUICK,
            batch=BatchPolicy(max_size=10, max_wait=0.3),
        )
        async def handle(items: list[Item], messages: list[Message]) -> None:
            for item, message in zip(items, messages, strict=True):
                seen.add((item.n, message.attempt))
            if any(message.attempt == 1 for message in messages):
                raise ConnectionError("downstream not ready")

        await broker.start()
        await broker.publish_batch(names.topic(), [Item(n=n) for n in range(3)])
        await seen.wait_for(6)
        await seen.settle(0.5)
        assert sorted(seen.items) == [(n, a) for n in range(3) for a in (1, 2)]

    async def test_an_undecodable_body_in_a_batch_dead_letters_alone(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        dead: Collector = collector()
        broker = brokers()

        @broker.subscriber(
            names.topic(),
            group=names.group(),
            retry=QUICK,
            batch=BatchPolicy(max_size=10, max_wait=0.3),
        )
        async def handle(items: list[Item]) -> None:
            for item in items:
                seen.add(item.n)

        dlq_reader(broker, f"{names.topic()}.{names.group()}.dlq", names.group("ops"), dead)
        await broker.start()
        await broker.publish_batch(names.topic(), [Item(n=1), b"not json", Item(n=2)])
        [letter] = await dead.wait_for(1)
        await seen.wait_for(2)
        await seen.settle(0.5)
        assert sorted(seen.items) == [1, 2]
        assert letter.body == b"not json"
        assert letter.headers[h.DLQ_REASON] == "decode-error"

    @requires("ordering")
    async def test_an_ordered_batch_subscriber_keeps_key_order_across_batches_and_retries(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        failed_once: set[tuple[str, int]] = set()
        broker = brokers()

        @broker.subscriber(
            names.topic(),
            group=names.group(),
            ordered=True,
            retry=RetryPolicy(max_attempts=3, backoff=fixed(0.1)),
            batch=BatchPolicy(max_size=4, max_wait=0.1),
        )
        async def handle(items: list[Item], messages: list[Message]) -> None:
            failures: dict[int, BaseException] = {}
            for index, (item, message) in enumerate(zip(items, messages, strict=True)):
                assert message.key is not None
                mark = (message.key, item.n)
                if item.n % 5 == 2 and mark not in failed_once:
                    failed_once.add(mark)
                    failures[index] = ConnectionError("fails once")
            for index, (item, message) in enumerate(zip(items, messages, strict=True)):
                if index not in failures:
                    seen.add((message.key, item.n))
            if failures:
                raise BatchFailed(failures)

        await broker.start()
        for key in ("a", "b"):
            await broker.publish_batch(names.topic(), [Item(n=n) for n in range(12)], key=key)
        await seen.wait_for(24, timeout=20)
        await seen.settle(0.5)
        for key in ("a", "b"):
            handled = [n for k, n in seen.items if k == key]
            last = {n: i for i, n in enumerate(handled)}  # last handling of each message
            assert sorted(last, key=last.__getitem__) == list(range(12)), handled

    async def test_an_idempotent_batch_subscriber_drops_known_ids(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()

        @broker.subscriber(
            names.topic(),
            group=names.group(),
            idempotent=True,
            batch=BatchPolicy(max_size=10, max_wait=0.2),
        )
        async def handle(messages: list[Message]) -> None:
            for message in messages:
                seen.add(message.id)

        await broker.start()
        first = [Outgoing(b"x", message_id=f"id-{n}") for n in range(3)]
        await broker.publish_batch(names.topic(), first)
        await seen.wait_for(3)
        again = [Outgoing(b"x", message_id=f"id-{n}") for n in (0, 1, 2, 3)]
        await broker.publish_batch(names.topic(), again)
        await seen.wait_for(4)
        await seen.settle(0.5)
        assert sorted(seen.items) == ["id-0", "id-1", "id-2", "id-3"]
