"""Request/reply (docs/semantics.md, "Request/reply"): the handler's return value answers a request.

Requester and responder are separate broker instances (separate services), so the reply
really travels through the broker on the requester's per-instance reply topic.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from pydantic import BaseModel

from ... import Message, RequestTimeoutError, RetryPolicy, fixed
from .support import BrokerFactory, Collector, Names


class Quote(BaseModel):
    sku: str
    quantity: int


class Price(BaseModel):
    sku: str
    cents: int


class RequestCases:
    async def test_request_returns_the_handlers_return_value(
        self, brokers: BrokerFactory, names: Names
    ) -> None:
        responder, requester = brokers(), brokers()

        @responder.subscriber(names.topic(), group=names.group())
        async def quote(q: Quote) -> Price:
            return Price(sku=q.sku, cents=199 * q.quantity)

        await responder.start()
        await requester.start()
        reply = await requester.request(names.topic(), Quote(sku="a-1", quantity=3), timeout=30)
        assert isinstance(reply, Message)
        assert Price.model_validate_json(reply.body) == Price(sku="a-1", cents=597)
        assert reply.content_type == "application/json"
        assert not any(name.startswith("unimq-") for name in reply.headers)

    async def test_request_without_a_reply_in_time_times_out(
        self, brokers: BrokerFactory, names: Names, backend: Any
    ) -> None:
        responder, requester = brokers(), brokers()
        release = asyncio.Event()

        @responder.subscriber(names.topic(), group=names.group())
        async def slow(message: Message) -> str:
            await release.wait()  # slower than the requester's timeout
            return "too late"

        await responder.start()
        await requester.start()
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError, match="no reply"):
            await requester.request(names.topic(), b"x", timeout=1.0)
        assert time.monotonic() - started < 1.0 + 5 * backend.time_scale
        release.set()  # the late reply finds no waiting request: dropped, not an error
        await responder.drain(10)

    async def test_a_failing_handler_sends_no_reply_and_retries_then_dead_letters(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        attempts: Collector = collector()
        dead: Collector = collector()
        responder, requester = brokers(), brokers()
        kinds = _publish_kinds(responder)

        @responder.subscriber(
            names.topic(),
            group=names.group(),
            retry=RetryPolicy(max_attempts=2, backoff=fixed(0.1)),
        )
        async def failing(message: Message) -> str:
            attempts.add(message.attempt)
            raise ConnectionError("pricing backend down")

        @responder.subscriber(f"{names.topic()}.{names.group()}.dlq", group=names.group("dlq"))
        async def dead_letters(message: Message) -> None:
            dead.add(message.id)

        await responder.start()
        await requester.start()
        with pytest.raises(RequestTimeoutError):
            await requester.request(names.topic(), b"x", timeout=3.0)
        await attempts.wait_for(2)
        await dead.wait_for(1)
        assert attempts.items == [1, 2]
        assert "reply" not in kinds and kinds.count("dead-letter") == 1

    async def test_a_retried_request_replies_from_the_attempt_that_succeeds(
        self, brokers: BrokerFactory, names: Names
    ) -> None:
        responder, requester = brokers(), brokers()

        @responder.subscriber(
            names.topic(),
            group=names.group(),
            retry=RetryPolicy(max_attempts=3, backoff=fixed(0.1)),
        )
        async def flaky(message: Message) -> dict[str, int]:
            if message.attempt == 1:
                raise ConnectionError("not yet")
            return {"attempt": message.attempt}

        await responder.start()
        await requester.start()
        reply = await requester.request(names.topic(), b"x", timeout=30)
        assert json.loads(reply.body) == {"attempt": 2}

    async def test_concurrent_requests_are_matched_by_correlation_id(
        self, brokers: BrokerFactory, names: Names
    ) -> None:
        responder, requester = brokers(), brokers()

        @responder.subscriber(names.topic(), group=names.group(), concurrency=8)
        async def double(n: int) -> int:
            await asyncio.sleep(0.05 * (n % 3))  # replies come back out of order
            return n * 2

        await responder.start()
        await requester.start()
        replies = await asyncio.gather(
            *(requester.request(names.topic(), n, timeout=30) for n in range(20))
        )
        assert [json.loads(r.body) for r in replies] == [n * 2 for n in range(20)]

    async def test_a_plain_publish_gets_no_reply(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        broker = brokers()
        kinds = _publish_kinds(broker)

        @broker.subscriber(names.topic(), group=names.group())
        async def answer(message: Message) -> str:
            seen.add(message.id)
            return "an answer nobody asked for"

        await broker.start()
        await broker.publish(names.topic(), b"x")
        await seen.wait_for(1)
        await seen.settle(0.5)
        assert kinds == ["publish"]


def _publish_kinds(broker: Any) -> list[str]:
    """The kind of everything ``broker`` puts on the wire (``"reply"`` for replies)."""
    kinds: list[str] = []

    async def record(publish: Any, call_next: Any) -> None:
        kinds.append(publish.kind)
        await call_next()

    broker.add_publish_middleware(record)
    return kinds
