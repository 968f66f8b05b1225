"""The cheaper batch paths (issue 14, per-message costs): each must give what the general path
gives. A batch handler gets only the lists it declares (no ``Message`` per delivery for a
handler of bodies, no decode for a handler of messages); a batch that succeeded is acked in one
``ack_many``; ``publish_batch``'s receipts skip their Python-level constructor."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence
from typing import Any

import pytest
from pydantic import BaseModel

import unimq
from unimq import BatchFailed, BatchPolicy, Broker, Message, RetryPolicy
from unimq.delivery import settle
from unimq.delivery.settle import Settlement
from unimq.memory.transport import MemoryDelivery
from unimq.testing import VirtualClock

pytestmark = pytest.mark.timeout(60)


class Line(BaseModel):
    n: int


async def test_a_handler_of_bodies_gets_no_message_built_and_still_retries_and_dead_letters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``list[T]`` alone: no ``Message`` is opened, yet retries count attempts per message and
    the last attempt dead-letters, with the attempt count on the dead letter."""
    opened: list[str] = []
    original = Settlement.open_message

    def counting(self: Settlement, group: str) -> Message:
        opened.append(group)
        return original(self, group)

    monkeypatch.setattr(Settlement, "open_message", counting)
    clock = VirtualClock()
    broker = Broker("memory://", clock=clock)
    calls: list[list[int]] = []
    dead: list[tuple[int, str]] = []

    @broker.subscriber(
        "t",
        group="g",
        batch=BatchPolicy(max_size=3, max_wait=0.05),
        retry=RetryPolicy(max_attempts=2, backoff=unimq.fixed(1)),
    )
    async def handle(lines: list[Line]) -> None:
        calls.append([line.n for line in lines])
        failures = {i: RuntimeError("odd") for i, line in enumerate(lines) if line.n % 2}
        if failures:
            raise BatchFailed(failures)

    @broker.subscriber("t.g.dlq", group="ops")
    async def read_dead(message: Message) -> None:
        dead.append((Line.model_validate_json(message.body).n, message.headers["unimq-attempts"]))

    async with broker:
        await broker.publish_batch("t", [Line(n=n) for n in range(3)])
        for _ in range(4):
            await asyncio.sleep(0.2)
            await clock.advance(1)
        await broker.drain(timeout=5)
    assert sorted(n for call in calls for n in call) == [0, 1, 1, 2]
    assert dead == [(1, "2")]
    assert opened == ["ops"]  # only the per-message DLQ reader built a Message


async def test_an_ordered_handler_of_bodies_retries_in_place_without_a_message() -> None:
    """Ordered batches retry in place; with no ``Message`` to update, the attempt still
    counts (the dead letter says 3 attempts)."""
    clock = VirtualClock()
    broker = Broker("memory://", clock=clock)
    seen: list[int] = []
    dead: list[str] = []

    @broker.subscriber(
        "t",
        group="g",
        ordered=True,
        batch=BatchPolicy(max_size=2, max_wait=0.05),
        retry=RetryPolicy(max_attempts=3, backoff=unimq.fixed(1)),
    )
    async def handle(lines: list[Line]) -> None:
        seen.extend(line.n for line in lines)
        raise RuntimeError("always")

    @broker.subscriber("t.g.dlq", group="ops")
    async def read_dead(message: Message) -> None:
        dead.append(message.headers["unimq-attempts"])

    async with broker:
        await broker.publish_batch("t", [Line(n=1), Line(n=2)], key="k")
        for _ in range(6):
            await asyncio.sleep(0.2)
            await clock.advance(1)
        await broker.drain(timeout=5)
    assert seen == [1, 2, 1, 2, 1, 2]
    assert dead == ["3", "3"]


async def test_a_handler_of_messages_gets_bodies_as_published_without_decoding() -> None:
    broker = Broker("memory://")
    got: list[tuple[bytes, int]] = []

    @broker.subscriber("t", group="g", batch=BatchPolicy(max_size=10, max_wait=0.05))
    async def handle(messages: list[Message]) -> None:
        got.extend((m.body, m.attempt) for m in messages)

    async with broker:
        await broker.publish_batch("t", [b"not json", b"\xff"])
        await asyncio.sleep(0.2)
        await broker.drain(timeout=5)
    assert got == [(b"not json", 1), (b"\xff", 1)]


async def test_a_successful_batch_is_acked_in_one_ack_many_and_own_acks_are_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One ``ack_many`` for the batch, holding only what the handler did not settle itself;
    a message the handler nacked is retried, not acked."""
    calls: list[int] = []
    original = MemoryDelivery.__dict__["ack_many"].__func__

    async def counting(cls: type, deliveries: Sequence[Any]) -> None:
        calls.append(len(deliveries))
        await original(cls, deliveries)

    monkeypatch.setattr(MemoryDelivery, "ack_many", classmethod(counting))
    clock = VirtualClock()
    broker = Broker("memory://", clock=clock)
    seen: list[tuple[bytes, int]] = []

    @broker.subscriber(
        "t",
        group="g",
        batch=BatchPolicy(max_size=4, max_wait=0.05),
        retry=RetryPolicy(max_attempts=3, backoff=unimq.fixed(1)),
    )
    async def handle(messages: list[Message]) -> None:
        seen.extend((m.body, m.attempt) for m in messages)
        for m in messages:
            if m.body == b"own" and m.attempt == 1:
                await m.ack()
            if m.body == b"again" and m.attempt == 1:
                await m.nack()

    async with broker:
        await broker.publish_batch("t", [b"a", b"own", b"again", b"b"])
        await asyncio.sleep(0.2)
        await clock.advance(1)
        await asyncio.sleep(0.2)
        await broker.drain(timeout=5)
    assert sorted(seen) == sorted([(b"a", 1), (b"own", 1), (b"again", 1), (b"b", 1), (b"again", 2)])
    assert calls == [2, 1]  # a and b; then the retried copy


async def test_a_batch_of_deliveries_without_ack_many_is_acked_one_by_one() -> None:
    """``ack_deliveries`` acks each class that has ``ack_many`` in one call and hands back the
    deliveries of a class without it (the caller acks those one by one), mixed or not."""

    class Plain:
        def __init__(self) -> None:
            self.acks = 0

        async def ack(self) -> None:
            self.acks += 1

    class Many(Plain):
        calls = 0

        @classmethod
        async def ack_many(cls, deliveries: Sequence[Plain]) -> None:
            cls.calls += 1
            for delivery in deliveries:
                delivery.acks += 1

    plain = [Plain(), Plain()]
    assert await settle.ack_deliveries(plain) == plain  # type: ignore[arg-type]
    mixed = [Many(), Plain(), Many()]
    assert await settle.ack_deliveries(mixed) == [mixed[1]]  # type: ignore[arg-type]
    assert [d.acks for d in mixed] == [1, 0, 1] and Many.calls == 1
    many = [Many(), Many()]
    assert await settle.ack_deliveries(many) == []  # type: ignore[arg-type]
    assert [d.acks for d in many] == [1, 1] and Many.calls == 2


async def test_publish_batch_receipts_are_publish_receipts() -> None:
    """The receipts are built without PublishReceipt's own constructor: still the same type,
    fields and equality as a publish's receipt."""
    from unimq import PublishReceipt

    async with Broker("memory://") as broker:
        receipts = await broker.publish_batch("t", [b"a", b"b"])
        single = await broker.publish("t", b"c")
    assert all(type(r) is PublishReceipt for r in (*receipts, single))
    assert receipts[0] == PublishReceipt(receipts[0].message_id, "t", None)
    assert receipts[0]._asdict() == {
        "message_id": receipts[0].message_id,
        "topic": "t",
        "deliver_at": None,
    }


def _count_settlements(monkeypatch: pytest.MonkeyPatch) -> list[Settlement]:
    """Every Settlement made from now on (the per-message state a batch should not need)."""
    made: list[Settlement] = []
    original = Settlement.__init__

    def counting(self: Settlement, *args: Any) -> None:
        made.append(self)
        original(self, *args)

    monkeypatch.setattr(Settlement, "__init__", counting)
    return made


async def _one_batch(size: int, fail: set[int] | None = None, own_ack: int | None = None) -> int:
    """Publish ``size`` messages, handle them as one batch (``list[Message]``), wait until
    settled; returns how many messages were handled."""
    broker = Broker("memory://")
    handled = 0

    @broker.subscriber(
        "t", group="g", batch=BatchPolicy(max_size=size, max_wait=5), retry=RetryPolicy(1)
    )
    async def handle(messages: list[Message]) -> None:
        nonlocal handled
        handled += len(messages)
        if own_ack is not None:
            await messages[own_ack].ack()
        if fail:
            raise BatchFailed({i: RuntimeError("no") for i in fail})

    async with broker:
        await broker.publish_batch("t", [b"x"] * size)
        await broker.drain(timeout=10)
    return handled


async def test_a_successful_batch_makes_no_settlement_per_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One settlement per batch: a batch that succeeds is acked in one step and builds no
    Settlement (before: one per message, each in a cycle with its Message)."""
    made = _count_settlements(monkeypatch)
    assert await _one_batch(200) == 200
    assert made == []


async def test_only_failed_or_self_settled_messages_get_a_settlement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Per-message state only where a message needs its own fate: BatchFailed's two, and the
    one its handler acked itself; the other messages of the batch are acked together."""
    made = _count_settlements(monkeypatch)
    assert await _one_batch(50, fail={3, 7}, own_ack=10) == 50
    batch_settlements = [s for s in made if s.envelope.topic == "t"]  # (not the DLQ's)
    assert sorted(s.envelope.id for s in batch_settlements) == sorted(
        {s.envelope.id for s in batch_settlements}
    )
    assert len(batch_settlements) == 3
    assert all(s.settled for s in batch_settlements)


async def test_a_settled_batch_keeps_no_message_alive() -> None:
    """The messages and deliveries of a settled batch are freed by reference counting alone
    (the collector is off here): no Message <-> settler cycle is left for the garbage
    collector, and no collector task holds its last batch while it waits for the next one.
    Before, every one of them stayed alive (up to ``concurrency`` batches of them, kept across
    young collections: a third of a batch's time went to collections)."""
    broker = Broker("memory://")
    handled = 0

    @broker.subscriber("t", group="g", batch=BatchPolicy(max_size=400, max_wait=0.01))
    async def handle(messages: list[Message]) -> None:
        nonlocal handled
        handled += len(messages)

    def alive(kind: type) -> int:
        return sum(type(o) is kind for o in gc.get_objects())

    async with broker:
        gc.collect()
        gc.disable()
        try:
            for size in (20, 400, 400):
                await broker.publish_batch("t", [b"x"] * size)
                await broker.drain(timeout=10)
            messages, deliveries = alive(Message), alive(MemoryDelivery)
        finally:
            gc.enable()
    assert handled == 820
    assert (messages, deliveries) == (0, 0)


async def test_manual_batch_messages_can_be_settled_after_the_handler_returned() -> None:
    """``ack="manual"``: a batch's messages settle through the batch, which stays their settler
    after the handler returned (a handler may ack them once its own write is flushed)."""
    broker = Broker("memory://")
    kept: list[Message] = []
    calls = 0

    @broker.subscriber("t", group="g", ack="manual", batch=BatchPolicy(max_size=3, max_wait=0.05))
    async def handle(messages: list[Message]) -> None:
        nonlocal calls
        calls += 1
        kept.extend(messages)

    lag = broker.transport.lag  # type: ignore[attr-defined]
    async with broker:
        await broker.publish_batch("t", [b"a", b"b", b"c"])
        for _ in range(50):
            if len(kept) == 3:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # the handler has returned, the batch is done
        assert await lag("t", "g") == 3  # nothing acked yet
        await kept[0].ack()
        await kept[1].nack(0)  # a retry: handled again, then left unacked again
        await kept[2].reject("no")
        await asyncio.sleep(0.2)
        assert await lag("t", "g") == 0  # each settled: acked, retried (a copy), dead-lettered
    assert calls == 2 and len(kept) == 4  # the retry copy was handled again
