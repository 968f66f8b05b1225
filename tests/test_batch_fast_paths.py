"""The batch fast paths of issue 14's performance work: each gives exactly what the path it
short-cuts gives (publish_batch's shared checks, ack_many, the room's counting)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import confluent_kafka
import pytest
from unimq_kafka.offsets import OffsetTracker
from unimq_kafka.subscription import KafkaDelivery, delivery_class

from unimq import BatchPolicy, Broker, Message
from unimq.batch_prepare import prepare_bodies
from unimq.errors import InvalidMessageError
from unimq.slots import Slots
from unimq.validation import prepare_publish

pytestmark = pytest.mark.timeout(60)


def _now() -> float:
    return 1_700_000_000.123


@pytest.mark.parametrize(
    ("bodies", "key", "headers"),
    [
        ([b"a", b"b"], None, None),
        ([b"a", "text", {"n": 1}], "k", {"h": "v"}),
    ],
)
def test_prepare_bodies_builds_what_prepare_publish_builds(
    bodies: list[Any], key: str | None, headers: dict[str, str] | None
) -> None:
    fast = prepare_bodies("t", bodies, key, headers, _now, False)
    slow = [prepare_publish("t", b, key, headers, None, None, None, _now) for b in bodies]
    assert len(fast) == len(slow)
    for got, want in zip(fast, slow, strict=True):
        # Every field but the fresh message id is the same, headers in the same order.
        assert got[4] != want[4] and got[2]["unimq-id"] == got[4]
        assert list(got[2]) == list(want[2])
        assert {**got[2], "unimq-id": ""} == {**want[2], "unimq-id": ""}
        assert got[:2] == want[:2] and got[3] == want[3] and got[5:] == want[5:]
    assert len({p[4] for p in fast}) == len(fast)  # one id each
    assert fast[0][2] is not fast[-1][2]  # headers are each item's own dict


def test_prepare_bodies_names_the_item_that_cannot_be_encoded() -> None:
    from unimq.errors import EncodeError

    with pytest.raises(EncodeError, match=r"^item 3: cannot encode a float body"):
        prepare_bodies("t", [b"a", b"b", b"c", float("nan")], None, None, _now, True, 0)


def test_prepare_bodies_checks_shared_arguments_as_of_the_first_item() -> None:
    with pytest.raises(InvalidMessageError, match=r"item 0: .*reserved"):
        prepare_bodies("t", [b"a"], None, {"unimq-id": "x"}, _now, True)


async def test_publish_batch_of_bodies_names_a_bad_topic_or_key_like_before() -> None:
    async with Broker("memory://") as broker:
        with pytest.raises(InvalidMessageError, match="item 0"):
            await broker.publish_batch("t", [b"a"], key="\ud800")
        receipts = await broker.publish_batch("t", iter([b"a", b"b"]))  # any iterable
        assert len({r.message_id for r in receipts}) == 2


def test_take_many_anyway_and_give_many_count_as_one_call_each() -> None:
    """The batch receiver's one-call forms equal take_now()-or-take_anyway() and give()
    repeated: overshoot repaid first, then waiters woken, then slots freed."""
    one, many = Slots(3), Slots(3)
    assert one.take_now() and many.take_now()
    for _ in range(4):
        if not one.take_now():
            one.take_anyway()
    many.take_many_anyway(4)
    assert one.free == many.free == -2
    for _ in range(5):
        one.give()
    many.give_many(5)
    assert one.free == many.free == 3
    many.give_many(0)
    assert many.free == 3


async def test_give_many_wakes_waiters_before_freeing() -> None:
    slots = Slots(0)
    waiting = [asyncio.ensure_future(slots.take()) for _ in range(2)]
    await asyncio.sleep(0)
    slots.give_many(3)
    await asyncio.sleep(0)
    assert all(w.done() for w in waiting) and slots.free == 1


def _deliveries(tracker: OffsetTracker, count: int) -> list[KafkaDelivery]:
    tracker.assign([("t", 0)])
    with tracker.lock:
        deliveries = tracker.handed_locked(
            [
                confluent_kafka.Message(topic="t", partition=0, offset=o, value=b"body")
                for o in range(count)
            ],
            delivery_class(tracker, None),
        )
    assert tracker.take_many(deliveries) == deliveries
    return deliveries


async def test_kafka_ack_many_moves_the_commit_point_as_acks_one_by_one_do() -> None:
    one, many = OffsetTracker(), OffsetTracker()
    singles, batch = _deliveries(one, 6), _deliveries(many, 6)
    order = [1, 0, 2, 5]  # 3 and 4 still running: the commit point stops before 3
    for index in order:
        await singles[index].ack()
    await KafkaDelivery.ack_many([batch[index] for index in order])
    assert one.due() == many.due() == [(("t", 0), 3)]
    states = many.begin_revoke([("t", 0)])
    assert many.in_flight(states) == 2  # only 3 and 4
    await KafkaDelivery.ack_many([batch[0], batch[3]])  # 0 again: acked at most once
    assert many.in_flight(states) == 1


async def test_kafka_ack_many_ignores_a_released_partition() -> None:
    tracker = OffsetTracker()
    deliveries = _deliveries(tracker, 2)
    tracker.begin_revoke([("t", 0)])
    assert tracker.release([("t", 0)]) == []
    await KafkaDelivery.ack_many(deliveries)
    assert tracker.due() == []


async def test_a_failing_ack_many_falls_back_to_one_ack_each() -> None:
    """A batch whose ack_many raises is acked one by one: every message exactly once."""
    from unimq.memory.transport import MemoryDelivery

    broker = Broker("memory://")
    seen: list[int] = []
    calls: list[int] = []

    async def broken(cls: type, deliveries: Sequence[Any]) -> None:
        calls.append(len(deliveries))
        await deliveries[0].ack()  # partly done, then it fails
        raise RuntimeError("ack_many failed (injected)")

    @broker.subscriber("t", group="g", batch=BatchPolicy(max_size=4, max_wait=0.05))
    async def handle(messages: list[Message]) -> None:
        seen.extend(int(m.body) for m in messages)

    original = MemoryDelivery.__dict__["ack_many"]
    MemoryDelivery.ack_many = classmethod(broken)  # type: ignore[method-assign,assignment]
    try:
        async with broker:
            await broker.publish_batch("t", [str(n).encode() for n in range(4)])
            await broker.drain(timeout=5)
    finally:
        MemoryDelivery.ack_many = original  # type: ignore[method-assign]
    # drain() returned: nothing is left unsettled (memory:// counts unsettled deliveries),
    # and nothing was handed out twice.
    assert sorted(seen) == [0, 1, 2, 3] and calls == [4]
