"""Retries (non-blocking, counted in the message), dead-lettering, manual settlement."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from ... import Broker, Message, Reject, RetryLater, RetryPolicy, fixed
from ... import headers as h
from .support import BrokerFactory, Collector, Names

QUICK = RetryPolicy(max_attempts=3, backoff=fixed(0.2))


class Strict(BaseModel):
    order_id: str
    amount: int


def dlq_reader(broker: Broker, topic: str, group: str, sink: Collector) -> None:
    @broker.subscriber(topic, group=group)
    async def read_dead_letters(message: Message) -> None:
        sink.add(message)


class RetryCases:
    async def test_retry_until_success_keeps_id_and_counts_attempts(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()

        @broker.subscriber(
            names.topic(),
            group=names.group(),
            retry=RetryPolicy(max_attempts=5, backoff=fixed(0.1)),
        )
        async def flaky(message: Message) -> None:
            seen.add((message.id, message.attempt, message.topic, dict(message.headers)))
            if message.attempt < 3:
                raise ConnectionError("downstream not ready")

        await broker.start()
        receipt = await broker.publish(names.topic(), b"x", headers={"tenant": "acme"})
        await seen.wait_for(3)
        await seen.settle(0.5)
        assert [(i, a, t) for i, a, t, _ in seen.items] == [
            (receipt.message_id, n, names.topic()) for n in (1, 2, 3)
        ]
        assert all(headers == {"tenant": "acme"} for *_, headers in seen.items)

    async def test_retry_later_sets_the_delay(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()

        @broker.subscriber(
            names.topic(), group=names.group(), retry=RetryPolicy(max_attempts=3, backoff=fixed(0))
        )
        async def later(message: Message) -> None:
            seen.add(message.attempt)
            if message.attempt == 1:
                raise RetryLater(delay=1.0)

        await broker.start()
        await broker.publish(names.topic(), b"x")
        await seen.wait_for(2)
        assert seen.items == [1, 2]
        waited = seen.times[1] - seen.times[0]
        assert waited >= 0.95, f"retried after {waited:.2f}s, RetryLater asked for 1s"

    async def test_retry_backoff_is_waited(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()

        @broker.subscriber(
            names.topic(),
            group=names.group(),
            retry=RetryPolicy(max_attempts=2, backoff=fixed(1.0)),
        )
        async def failing_once(message: Message) -> None:
            seen.add(message.attempt)
            if message.attempt == 1:
                raise RuntimeError("first try fails")

        await broker.start()
        await broker.publish(names.topic(), b"x")
        await seen.wait_for(2)
        waited = seen.times[1] - seen.times[0]
        assert 0.95 <= waited <= 4.0, f"backoff of 1s took {waited:.2f}s"

    async def test_retry_does_not_block_other_messages(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()

        @broker.subscriber(
            names.topic(),
            group=names.group(),
            concurrency=1,
            retry=RetryPolicy(max_attempts=2, backoff=fixed(2.0)),
        )
        async def handle(body: str) -> None:
            seen.add(body)
            if body == "poison-ish":
                raise RuntimeError("fails once")

        await broker.start()
        await broker.publish(names.topic(), "poison-ish")
        await seen.wait_for(1)  # failed once; its retry is due in 2 s
        await broker.publish(names.topic(), "healthy")
        await seen.wait_for(2)
        assert seen.items == ["poison-ish", "healthy"], "the healthy message waited for the retry"
        await seen.wait_for(3, timeout=15)
        assert seen.items[2] == "poison-ish"
        assert seen.times[2] - seen.times[0] >= 1.9, "the retry did not wait for its backoff"

    async def test_exception_outside_retry_on_goes_to_dlq(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        calls: Collector = collector()
        dead: Collector = collector()
        broker = brokers()
        policy = RetryPolicy(max_attempts=5, backoff=fixed(0.1), retry_on=(ConnectionError,))

        @broker.subscriber(names.topic(), group=names.group(), retry=policy)
        async def handle(message: Message) -> None:
            calls.add(message.attempt)
            raise ValueError("a bug, not a blip")

        dlq_reader(broker, f"{names.topic()}.{names.group()}.dlq", names.group("ops"), dead)
        await broker.start()
        await broker.publish(names.topic(), b"x")
        [letter] = await dead.wait_for(1)
        assert calls.items == [1]
        assert letter.headers[h.DLQ_REASON] == "non-retryable"
        assert letter.headers[h.ERROR_TYPE] == "ValueError"

    async def test_exhausted_retries_dead_letter_with_diagnostics(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        calls: Collector = collector()
        dead: Collector = collector()
        broker = brokers()

        @broker.subscriber(names.topic(), group=names.group(), retry=QUICK)
        async def always_fails(message: Message) -> None:
            calls.add(message.attempt)
            raise RuntimeError("payment gateway down")

        dlq_reader(broker, f"{names.topic()}.{names.group()}.dlq", names.group("ops"), dead)
        await broker.start()
        before = time.time()
        receipt = await broker.publish(
            names.topic(), b"original", key="k-1", headers={"tenant": "acme"}
        )
        [letter] = await dead.wait_for(1, timeout=15)
        assert calls.items == [1, 2, 3]
        assert letter.id == receipt.message_id
        assert letter.body == b"original" and letter.key == "k-1"
        assert letter.headers["tenant"] == "acme"
        assert set(letter.headers) >= h.DLQ_DIAGNOSTICS
        assert letter.headers[h.DLQ_REASON] == "max-attempts"
        assert letter.headers[h.ERROR_TYPE] == "RuntimeError"
        assert letter.headers[h.ERROR_MESSAGE] == "payment gateway down"
        assert letter.headers[h.ORIGINAL_TOPIC] == names.topic()
        assert letter.headers[h.ORIGINAL_GROUP] == names.group()
        assert letter.headers[h.ATTEMPTS] == "3"
        failed_at = datetime.fromisoformat(letter.headers[h.FAILED_AT].replace("Z", "+00:00"))
        assert failed_at.utcoffset() is not None and failed_at.timestamp() >= before - 1

    async def test_reject_dead_letters_immediately(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        calls: Collector = collector()
        dead: Collector = collector()
        broker = brokers()

        @broker.subscriber(names.topic(), group=names.group(), retry=QUICK)
        async def refuse(message: Message) -> None:
            calls.add(message.attempt)
            raise Reject("unknown customer")

        dlq_reader(broker, f"{names.topic()}.{names.group()}.dlq", names.group("ops"), dead)
        await broker.start()
        await broker.publish(names.topic(), b"x")
        [letter] = await dead.wait_for(1)
        await calls.settle(0.5)
        assert calls.items == [1]
        assert letter.headers[h.DLQ_REASON] == "rejected"
        assert letter.headers[h.ERROR_MESSAGE] == "unknown customer"

    async def test_undecodable_body_dead_letters_without_retry(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        calls: Collector = collector()
        dead: Collector = collector()
        broker = brokers()

        @broker.subscriber(names.topic(), group=names.group(), retry=QUICK)
        async def handle(order: Strict) -> None:
            calls.add(order)

        dlq_reader(broker, f"{names.topic()}.{names.group()}.dlq", names.group("ops"), dead)
        await broker.start()
        await broker.publish(names.topic(), {"order_id": "o-1", "amount": "not a number"})
        [letter] = await dead.wait_for(1)
        await calls.settle(0.3)
        assert calls.items == []
        assert letter.headers[h.DLQ_REASON] == "decode-error"
        assert letter.headers[h.ATTEMPTS] == "1"

    async def test_custom_dead_letter_topic(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        dead: Collector = collector()
        broker = brokers()

        @broker.subscriber(
            names.topic(),
            group=names.group(),
            retry=RetryPolicy(max_attempts=1),
            dead_letter=names.topic("parking-lot"),
        )
        async def handle(message: Message) -> None:
            raise RuntimeError("no")

        dlq_reader(broker, names.topic("parking-lot"), names.group("ops"), dead)
        await broker.start()
        receipt = await broker.publish(names.topic(), b"x")
        [letter] = await dead.wait_for(1)
        assert letter.id == receipt.message_id

    async def test_dead_letter_false_drops_after_the_last_attempt(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        calls: Collector = collector()
        dead: Collector = collector()
        broker = brokers()

        @broker.subscriber(
            names.topic(),
            group=names.group(),
            retry=RetryPolicy(max_attempts=2, backoff=fixed(0.1)),
            dead_letter=False,
        )
        async def handle(message: Message) -> None:
            calls.add(message.attempt)
            raise RuntimeError("no")

        dlq_reader(broker, f"{names.topic()}.{names.group()}.dlq", names.group("ops"), dead)
        await broker.start()
        await broker.publish(names.topic(), b"x")
        await calls.wait_for(2)
        await calls.settle(1.0)
        assert calls.items == [1, 2]
        assert dead.items == []

    async def test_dead_letter_can_be_replayed(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        dead: Collector = collector()
        handled: Collector = collector()
        broker = brokers()
        healthy = False

        @broker.subscriber(names.topic(), group=names.group(), retry=RetryPolicy(max_attempts=1))
        async def handle(message: Message) -> None:
            if not healthy:
                raise RuntimeError("outage")
            handled.add((message.id, message.attempt))

        dlq_reader(broker, f"{names.topic()}.{names.group()}.dlq", names.group("ops"), dead)
        await broker.start()
        receipt = await broker.publish(names.topic(), b"x", headers={"tenant": "acme"})
        [letter] = await dead.wait_for(1)
        healthy = True
        original = {k: v for k, v in letter.headers.items() if not k.startswith("unimq-")}
        await broker.publish(
            letter.headers[h.ORIGINAL_TOPIC],
            letter.body,
            key=letter.key,
            headers=original,
            message_id=letter.id,
        )
        assert await handled.wait_for(1) == [(receipt.message_id, 1)]

    async def test_manual_ack_nack_and_reject(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        calls: Collector = collector()
        dead: Collector = collector()
        broker = brokers()

        @broker.subscriber(names.topic(), group=names.group(), ack="manual", retry=QUICK)
        async def handle(body: str, message: Message) -> None:
            calls.add((body, message.attempt))
            if body == "nack-once" and message.attempt == 1:
                await message.nack(delay=0.1)
            elif body == "reject":
                await message.reject("bad input")
            else:
                await message.ack()

        dlq_reader(broker, f"{names.topic()}.{names.group()}.dlq", names.group("ops"), dead)
        await broker.start()
        for body in ("ok", "nack-once", "reject"):
            await broker.publish(names.topic(), body)
        [letter] = await dead.wait_for(1)
        await calls.wait_for(4)
        await calls.settle(0.5)
        assert sorted(calls.items) == [("nack-once", 1), ("nack-once", 2), ("ok", 1), ("reject", 1)]
        assert letter.body == b"reject" and letter.headers[h.DLQ_REASON] == "rejected"
        assert letter.headers[h.ERROR_MESSAGE] == "bad input"
