"""Basic delivery: identity, bodies, headers, volume, concurrency."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from pydantic import BaseModel

from ... import Message
from ... import headers as h
from ...errors import MessageTooLargeError
from ...transport import OutgoingMessage
from .support import BrokerFactory, Collector, Names


class Order(BaseModel):
    order_id: str
    amount: int
    note: str = ""


async def publish_many(broker: Any, topic: str, bodies: list[Any], **kwargs: Any) -> list[str]:
    """Publish in pipelined chunks (each publish is still individually confirmed)."""
    ids: list[str] = []
    for start in range(0, len(bodies), 500):
        chunk = bodies[start : start + 500]
        receipts = await asyncio.gather(*(broker.publish(topic, body, **kwargs) for body in chunk))
        ids.extend(receipt.message_id for receipt in receipts)
    return ids


class DeliveryCases:
    async def test_publish_receipt_id_reaches_the_handler(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()

        @broker.subscriber(names.topic(), group=names.group())
        async def handle(message: Message) -> None:
            seen.add((message.id, message.attempt, message.topic, message.group))

        await broker.start()
        receipt = await broker.publish(names.topic(), b"hello")
        assert receipt.message_id
        [(message_id, attempt, topic, group)] = await seen.wait_for(1)
        assert (message_id, attempt, topic, group) == (
            receipt.message_id,
            1,
            names.topic(),
            names.group(),
        )

    async def test_custom_message_id_is_kept(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()

        @broker.subscriber(names.topic(), group=names.group())
        async def handle(message: Message) -> None:
            seen.add(message.id)

        await broker.start()
        receipt = await broker.publish(names.topic(), b"x", message_id="order-42-created")
        assert receipt.message_id == "order-42-created"
        assert await seen.wait_for(1) == ["order-42-created"]

    async def test_key_and_headers_round_trip(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()

        @broker.subscriber(names.topic(), group=names.group())
        async def handle(message: Message) -> None:
            seen.add((message.key, dict(message.headers)))

        await broker.start()
        await broker.publish(
            names.topic(), b"x", key="customer-7", headers={"tenant": "acme", "trace": "t-1"}
        )
        [(key, headers)] = await seen.wait_for(1)
        assert key == "customer-7"
        assert headers == {"tenant": "acme", "trace": "t-1"}
        assert not any(name in headers for name in h.BOOKKEEPING)

    async def test_pydantic_model_body(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()

        @broker.subscriber(names.topic(), group=names.group())
        async def handle(order: Order, message: Message) -> None:
            seen.add((order, message.content_type))

        await broker.start()
        await broker.publish(names.topic(), Order(order_id="o-1", amount=3))
        [(order, content_type)] = await seen.wait_for(1)
        assert order == Order(order_id="o-1", amount=3)
        assert content_type == "application/json"

    async def test_dict_and_list_bodies(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        dicts: Collector = collector()
        lists: Collector = collector()
        broker = brokers()

        @broker.subscriber(names.topic("d"), group=names.group())
        async def on_dict(body: dict[str, int]) -> None:
            dicts.add(body)

        @broker.subscriber(names.topic("l"), group=names.group())
        async def on_list(body: list[Order]) -> None:
            lists.add(body)

        await broker.start()
        await broker.publish(names.topic("d"), {"a": 1, "b": 2})
        await broker.publish(names.topic("l"), [{"order_id": "o-1", "amount": 1}])
        assert await dicts.wait_for(1) == [{"a": 1, "b": 2}]
        assert await lists.wait_for(1) == [[Order(order_id="o-1", amount=1)]]

    async def test_text_and_bytes_bodies(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        texts: Collector = collector()
        raw: Collector = collector()
        broker = brokers()

        @broker.subscriber(names.topic("t"), group=names.group())
        async def on_text(body: str) -> None:
            texts.add(body)

        @broker.subscriber(names.topic("b"), group=names.group())
        async def on_bytes(body: bytes) -> None:
            raw.add(body)

        await broker.start()
        await broker.publish(names.topic("t"), "plain text")
        await broker.publish(names.topic("b"), bytes(range(256)))
        assert await texts.wait_for(1) == ["plain text"]
        assert await raw.wait_for(1) == [bytes(range(256))]

    async def test_non_ascii_body_and_headers(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()

        @broker.subscriber(names.topic(), group=names.group())
        async def handle(order: Order, message: Message) -> None:
            seen.add((order.note, dict(message.headers), message.key))

        await broker.start()
        note = "Grüße, 你好, привет, 🎉"
        await broker.publish(
            names.topic(),
            Order(order_id="o-ü", amount=1, note=note),
            key="клиент-7",
            headers={"city": "Zürich", "emoji": "📦"},
        )
        [(got_note, headers, key)] = await seen.wait_for(1)
        assert got_note == note
        assert headers == {"city": "Zürich", "emoji": "📦"}
        assert key == "клиент-7"

    async def test_one_mebibyte_body(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()

        @broker.subscriber(names.topic(), group=names.group())
        async def handle(body: bytes) -> None:
            seen.add(body)

        await broker.start()
        payload = bytes(range(256)) * 4096  # exactly 1 MiB
        limit = broker.capabilities.max_message_size
        if limit is not None and limit < len(payload):
            # A declared limit below 1 MiB (SQS): the publish is refused before it is sent, with
            # the typed error, and nothing arrives.
            with pytest.raises(MessageTooLargeError):
                await broker.publish(names.topic(), payload)
            await broker.publish(names.topic(), payload[:limit])
            [got] = await seen.wait_for(1, timeout=20)
            assert got == payload[:limit]
            return
        await broker.publish(names.topic(), payload)
        [got] = await seen.wait_for(1, timeout=20)
        assert len(got) == 1024 * 1024 and got == payload

    async def test_sync_handler_runs_in_a_worker_thread(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()
        loop_thread = threading.get_ident()

        @broker.subscriber(names.topic(), group=names.group())
        def handle(body: str) -> None:  # a plain def: must not block the event loop
            seen.add((body, threading.get_ident()))

        await broker.start()
        await broker.publish(names.topic(), "sync")
        [(body, thread)] = await seen.wait_for(1)
        assert body == "sync" and thread != loop_thread

    async def test_message_from_another_client_is_consumable(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()

        @broker.subscriber(names.topic(), group=names.group())
        async def handle(body: bytes, message: Message) -> None:
            seen.add((body, message.id, message.attempt))

        await broker.start()
        # Published through the transport with no unimq headers, as a foreign client would.
        await broker.transport.publish(
            OutgoingMessage(topic=names.topic(), body=b"foreign", headers={})
        )
        [(body, message_id, attempt)] = await seen.wait_for(1)
        assert body == b"foreign" and message_id and attempt == 1

    async def test_burst_of_10000_nothing_lost_or_duplicated(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()

        @broker.subscriber(names.topic(), group=names.group(), concurrency=32)
        async def handle(message: Message) -> None:
            seen.add(message.id)

        await broker.start()
        ids = await publish_many(broker, names.topic(), [f"m-{i}".encode() for i in range(10_000)])
        await seen.wait_for(10_000, timeout=120)
        await seen.settle(1.0)
        assert len(seen.items) == 10_000, f"{len(seen.items) - 10_000} duplicates"
        assert set(seen.items) == set(ids)

    async def test_concurrency_is_respected(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()
        running = 0
        peak = 0

        @broker.subscriber(names.topic(), group=names.group(), concurrency=4)
        async def handle(message: Message) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.05)
            running -= 1
            seen.add(message.id)

        await broker.start()
        await publish_many(broker, names.topic(), [b"x"] * 40)
        await seen.wait_for(40, timeout=30)
        assert peak == 4, f"at most 4 handlers may run at once and 4 should have; peak was {peak}"

    async def test_unsettled_manual_message_is_redelivered(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        first: Collector = collector()
        second: Collector = collector()
        consumer = brokers()

        @consumer.subscriber(names.topic(), group=names.group(), ack="manual")
        async def forgetful(message: Message) -> None:
            first.add(message.id)  # returns without settling

        await consumer.start()
        receipt = await consumer.publish(names.topic(), b"x")
        await first.wait_for(1)
        await consumer.stop()

        successor = brokers()

        @successor.subscriber(names.topic(), group=names.group())
        async def handle(message: Message) -> None:
            second.add(message.id)

        await successor.start()
        assert await second.wait_for(1, timeout=30) == [receipt.message_id]

    @pytest.mark.parametrize("body", [b"", "", {}])
    async def test_empty_bodies(
        self, brokers: BrokerFactory, names: Names, collector: Any, body: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()

        @broker.subscriber(names.topic(), group=names.group())
        async def handle(message: Message) -> None:
            seen.add(message.body)

        await broker.start()
        await broker.publish(names.topic(), body)
        [got] = await seen.wait_for(1)
        assert got == (b"{}" if body == {} else b"")
