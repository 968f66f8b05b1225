"""Batch subscribers and rate limits on memory:// (issue 14)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

import unimq
from unimq import BatchFailed, BatchPolicy, Broker, Message, RateLimit, Reject, RetryPolicy
from unimq.errors import ConfigurationError, HandlerSignatureError
from unimq.instrumentation import Publish
from unimq.testing import VirtualClock

pytestmark = pytest.mark.timeout(60)


class Line(BaseModel):
    n: int


async def test_a_batch_handler_gets_full_batches_and_acks_them() -> None:
    broker = Broker("memory://")
    calls: list[list[int]] = []

    @broker.subscriber("t", group="g", batch=BatchPolicy(max_size=10, max_wait=0.5))
    async def index(lines: list[Line], messages: list[Message]) -> None:
        assert [m.id for m in messages] and len(messages) == len(lines)
        calls.append([line.n for line in lines])

    async with broker:
        for n in range(25):
            await broker.publish("t", Line(n=n))
        await broker.drain(timeout=5)
    assert sorted(n for call in calls for n in call) == list(range(25))
    assert max(len(call) for call in calls) == 10
    assert len(calls) <= 6


async def test_a_partial_batch_goes_after_max_wait() -> None:
    broker = Broker("memory://")
    calls: list[int] = []

    @broker.subscriber("t", group="g", batch=BatchPolicy(max_size=100, max_wait=0.05))
    async def index(lines: list[bytes]) -> None:
        calls.append(len(lines))

    async with broker:
        for _ in range(3):
            await broker.publish("t", b"x")
        await asyncio.sleep(0.3)
        await broker.drain(timeout=5)
    assert calls == [3]


async def test_an_exception_retries_every_message_and_batch_failed_only_some() -> None:
    clock = VirtualClock()
    broker = Broker("memory://", clock=clock)
    seen: list[tuple[int, int]] = []
    dead: list[str] = []

    @broker.subscriber(
        "t",
        group="g",
        batch=BatchPolicy(max_size=4, max_wait=0.2),
        retry=RetryPolicy(max_attempts=2, backoff=unimq.fixed(1)),
    )
    async def handle(lines: list[Line], messages: list[Message]) -> None:
        seen.extend((line.n, m.attempt) for line, m in zip(lines, messages, strict=True))
        failures: dict[int, BaseException] = {}
        for index, line in enumerate(lines):
            if line.n == 1:
                failures[index] = RuntimeError("n=1 always fails")
            if line.n == 2:
                failures[index] = Reject("n=2 is rejected")
        if failures:
            raise BatchFailed(failures)

    @broker.subscriber("t.g.dlq", group="ops")
    async def read_dead(message: Message) -> None:
        dead.append(f"{message.body.decode()}:{message.headers['unimq-dlq-reason']}")

    async with broker:
        for n in range(4):
            await broker.publish("t", Line(n=n))
        await asyncio.sleep(0.3)
        for _ in range(4):
            await clock.advance(1)
            await asyncio.sleep(0.3)
        await broker.drain(timeout=5)
    assert sorted(seen) == [(0, 1), (1, 1), (1, 2), (2, 1), (3, 1)]
    assert sorted(dead) == ['{"n":1}:max-attempts', '{"n":2}:rejected']


async def test_a_poison_body_goes_to_the_dlq_alone() -> None:
    broker = Broker("memory://")
    got: list[int] = []
    dead: list[bytes] = []

    @broker.subscriber("t", group="g", batch=BatchPolicy(max_size=5, max_wait=0.1))
    async def handle(lines: list[Line]) -> None:
        got.extend(line.n for line in lines)

    @broker.subscriber("t.g.dlq", group="ops")
    async def read_dead(body: bytes) -> None:
        dead.append(body)

    async with broker:
        await broker.publish("t", Line(n=1))
        await broker.publish("t", b"not json")
        await broker.publish("t", Line(n=2))
        await asyncio.sleep(0.3)
        await broker.drain(timeout=5)
    assert got == [1, 2]
    assert dead == [b"not json"]


async def test_an_idempotent_batch_subscriber_drops_known_ids() -> None:
    broker = Broker("memory://")
    got: list[int] = []

    @broker.subscriber(
        "t", group="g", idempotent=True, batch=BatchPolicy(max_size=10, max_wait=0.05)
    )
    async def handle(lines: list[Line]) -> None:
        got.extend(line.n for line in lines)

    async with broker:
        for n in range(3):
            await broker.publish("t", Line(n=n), message_id=f"id-{n}")
        await asyncio.sleep(0.2)
        await broker.drain(timeout=5)
        for n in range(3):
            await broker.publish("t", Line(n=n), message_id=f"id-{n}")
        await asyncio.sleep(0.2)
        await broker.drain(timeout=5)
    assert sorted(got) == [0, 1, 2]


async def test_an_ordered_batch_subscriber_keeps_key_order_across_retries() -> None:
    clock = VirtualClock()
    broker = Broker("memory://", clock=clock)
    handled: list[int] = []
    failed_once: set[int] = set()

    @broker.subscriber(
        "t",
        group="g",
        ordered=True,
        batch=BatchPolicy(max_size=3, max_wait=0.05),
        retry=RetryPolicy(max_attempts=3, backoff=unimq.fixed(1)),
    )
    async def handle(lines: list[Line]) -> None:
        failures: dict[int, BaseException] = {}
        for index, line in enumerate(lines):
            if line.n % 4 == 1 and line.n not in failed_once:
                failed_once.add(line.n)
                failures[index] = RuntimeError("once")
        handled.extend(line.n for index, line in enumerate(lines) if index not in failures)
        if failures:
            raise BatchFailed(failures)

    async with broker:
        for n in range(12):
            await broker.publish("t", Line(n=n), key="k")
        for _ in range(20):
            await asyncio.sleep(0.1)
            await clock.advance(1)
        await broker.drain(timeout=5)
    # the last successful handling of each message is in publish order
    last: dict[int, int] = {n: i for i, n in enumerate(handled)}
    assert sorted(last) == list(range(12))
    assert sorted(last, key=last.__getitem__) == list(range(12))


def test_batch_handler_signatures_are_checked() -> None:
    broker = Broker("memory://")
    with pytest.raises(HandlerSignatureError):

        @broker.subscriber("t", group="g1", batch=BatchPolicy())
        async def single(line: Line) -> None: ...

    with pytest.raises(ConfigurationError):
        BatchPolicy(max_size=0)
    with pytest.raises(ConfigurationError):
        BatchPolicy(max_wait=float("nan"))
    with pytest.raises(ConfigurationError):
        RateLimit(0)


async def test_a_rate_limit_paces_handler_starts_on_the_virtual_clock() -> None:
    """Acceptance of issue 14: 1,000 messages at 100/s take 10 s +- 1% of virtual time."""
    clock = VirtualClock(start=1_000_000.0)
    broker = Broker("memory://", clock=clock)
    starts: list[float] = []

    @broker.subscriber("t", group="g", concurrency=8, rate_limit=RateLimit(100, per=1.0, burst=1))
    async def handle(body: bytes) -> None:
        starts.append(clock.now())

    async with broker:
        for _ in range(1000):
            await broker.publish("t", b"x")
        while len(starts) < 1000:
            await clock.advance(0.5)
        await broker.drain(timeout=5)
    elapsed = starts[-1] - starts[0]
    assert 9.9 <= elapsed <= 10.1, elapsed


async def test_publish_batch_returns_receipts_in_order() -> None:
    from unimq import Outgoing

    clock = VirtualClock()
    broker = Broker("memory://", clock=clock)
    got: list[tuple[str, str | None]] = []

    @broker.subscriber("t", group="g")
    async def handle(message: Message) -> None:
        got.append((message.body.decode(), message.key))

    async with broker:
        receipts = await broker.publish_batch(
            "t", ["a", Outgoing("b", key="kb", message_id="id-b"), Outgoing("c", delay=5)], key="k"
        )
        assert [r.topic for r in receipts] == ["t", "t", "t"]
        assert receipts[1].message_id == "id-b"
        assert receipts[2].deliver_at is not None and receipts[0].deliver_at is None
        await broker.drain(timeout=5)
        assert sorted(got) == [("a", "k"), ("b", "kb")]
        await clock.advance(5)
        await broker.drain(timeout=5)
    assert sorted(got) == [("a", "k"), ("b", "kb"), ("c", "k")]


async def test_publish_batch_checks_every_item_before_sending_any() -> None:
    from unimq.errors import InvalidMessageError

    broker = Broker("memory://")
    got: list[bytes] = []

    @broker.subscriber("t", group="g")
    async def handle(body: bytes) -> None:
        got.append(body)

    async with broker:
        with pytest.raises(InvalidMessageError, match="item 2"):
            await broker.publish_batch("t", [b"a", b"b", unimq.Outgoing(b"c", key="\ud800")])
        await broker.drain(timeout=5)
    assert got == []


async def test_publish_batch_names_the_items_that_failed() -> None:
    from unimq import PublishBatchError
    from unimq.errors import PublishError

    broker = Broker("memory://")

    async def fail_odd(publish: Any, call_next: Any) -> None:
        if int(publish.message.body) % 2:
            raise PublishError("refused (injected)")
        await call_next()

    broker.add_publish_middleware(fail_odd)
    got: list[int] = []

    @broker.subscriber("t", group="g")
    async def handle(body: bytes) -> None:
        got.append(int(body))

    async with broker:
        with pytest.raises(PublishBatchError) as caught:
            await broker.publish_batch("t", [str(n).encode() for n in range(6)])
        await broker.drain(timeout=5)
    assert sorted(caught.value.failures) == [1, 3, 5]
    assert [r is not None for r in caught.value.receipts] == [True, False] * 3
    assert sorted(got) == [0, 2, 4]


def test_slots_taken_anyway_are_repaid_before_a_waiter_wakes() -> None:
    """A batch receive may hold more deliveries than ``room``: the overshoot is repaid first."""
    from unimq.slots import Slots

    slots = Slots(1)
    assert slots.take_now()
    slots.take_anyway()
    assert slots.free == -1 and not slots.take_now()
    slots.give()
    assert slots.free == 0 and not slots.take_now()
    slots.give()
    assert slots.take_now()


async def test_a_batch_subscriber_takes_queued_deliveries_in_one_hand_off() -> None:
    """On memory:// the batch receiver uses ``receive_many``: a full batch of queued messages
    goes to the handler in one call."""
    broker = Broker("memory://")
    sizes: list[int] = []

    @broker.subscriber("t", group="g", batch=BatchPolicy(max_size=50, max_wait=1.0))
    async def handle(bodies: list[bytes]) -> None:
        sizes.append(len(bodies))

    async with broker:
        await broker.publish_batch("t", [b"x"] * 100)
        await asyncio.sleep(0.2)
        await broker.drain(timeout=5)
    assert sizes == [50, 50]


async def test_publish_batch_keeps_a_keys_order_when_sends_can_overtake_each_other() -> None:
    """Without ``publish_many`` the items go out concurrently; a send that takes longer (here a
    publish middleware, on RocketMQ its client's thread pool) must not let a later item of the
    same key overtake it. Items without a key still go out together."""
    broker = Broker("memory://")
    order: list[bytes] = []

    async def slow_first(publish: Publish, call_next: Any) -> None:
        body = publish.message.body
        await asyncio.sleep(0.05 if body.endswith(b"0") else 0)
        await call_next()

    broker.add_publish_middleware(slow_first)

    @broker.subscriber("t", group="g", ordered=True)
    async def handle(message: Message) -> None:
        order.append(message.body)

    async with broker:
        keyed = [unimq.Outgoing(f"k{n}".encode(), key="k") for n in range(3)]
        loose = [f"u{n}".encode() for n in range(3)]
        await broker.publish_batch("t", [*keyed, *loose])
        await asyncio.sleep(0.2)
        await broker.drain(timeout=5)
    assert [b for b in order if b.startswith(b"k")] == [b"k0", b"k1", b"k2"]


async def test_concurrent_batches_are_filled_one_at_a_time_in_arrival_order() -> None:
    """With ``concurrency`` > 1, one collector fills a batch at a time: messages that trickle
    in make full batches of consecutive messages, not ``concurrency`` interleaved partial
    ones (which would keep RabbitMQ from acking a finished batch with one multiple ack)."""
    broker = Broker("memory://")
    calls: list[list[int]] = []

    @broker.subscriber("t", group="g", batch=BatchPolicy(max_size=50, max_wait=2.0), concurrency=4)
    async def index(lines: list[Line]) -> None:
        calls.append([line.n for line in lines])

    async with broker:
        for n in range(200):
            await broker.publish("t", Line(n=n))
            await asyncio.sleep(0)  # arrivals trickle in while batches are being collected
        await broker.drain(timeout=10)
    assert calls == [list(range(start, start + 50)) for start in range(0, 200, 50)]


@pytest.mark.parametrize("ordered", [True, False])
async def test_a_message_nacked_inside_a_batch_that_succeeds_is_retried(ordered: bool) -> None:
    """``message.nack()`` in a batch handler asks for that message again, even though the
    batch as a whole succeeded. With ``ordered=True`` the nack retries in place, and the
    successful batch acked it instead: the retry was lost."""
    clock = VirtualClock()
    broker = Broker("memory://", clock=clock)
    seen: list[tuple[int, int]] = []

    @broker.subscriber(
        "t",
        group="g",
        ordered=ordered,
        batch=BatchPolicy(max_size=3, max_wait=0.05),
        retry=RetryPolicy(max_attempts=3, backoff=unimq.fixed(1)),
    )
    async def handle(messages: list[Message]) -> None:
        for message in messages:
            n = int(message.body)
            seen.append((n, message.attempt))
            if n == 1 and message.attempt == 1:
                await message.nack()

    async with broker:
        for n in range(3):
            await broker.publish("t", str(n).encode(), key="k")
        for _ in range(10):
            await asyncio.sleep(0.05)
            await clock.advance(1)
        await broker.drain(timeout=5)
    assert (1, 2) in seen, f"the nacked message was not delivered again: {seen}"
