"""RabbitMQ acks (``unimq_rabbitmq.acks``) against a fake aiormq channel and a model of the
broker's unacked deliveries.

What is pinned: however handlers finish (any order, any grouping into loop turns, some never),
the frames written settle exactly the deliveries that were acked — a ``multiple`` ack never
covers a delivery still being handled, no tag is acked twice or unknown to the broker (either
closes the channel with PRECONDITION_FAILED) — and a run of acks from the oldest unacked
delivery goes out as one frame.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp.commands import Basic
from pamqp.frame import unmarshal
from unimq_rabbitmq import acks
from unimq_rabbitmq.acks import AckBatcher
from unimq_rabbitmq.transport import RabbitMQDelivery

from unimq.delivery.settle import ack_deliveries


class FakeChannel:
    number = 1
    is_closed = False

    def __init__(self) -> None:
        self.write_queue: asyncio.Queue[Any] = asyncio.Queue()


def written_acks(channel: FakeChannel) -> list[Basic.Ack]:
    frames = []
    while not channel.write_queue.empty():
        data = channel.write_queue.get_nowait().payload
        while data:
            consumed, _, frame = unmarshal(data)
            data = data[consumed:]
            assert isinstance(frame, Basic.Ack)
            frames.append(frame)
    return frames


def settle(unacked: set[int], frames: list[Basic.Ack]) -> set[int]:
    """What the broker does with ``frames``: the tags they settle (error on an unknown tag)."""
    settled: set[int] = set()
    for frame in frames:
        assert frame.delivery_tag in unacked, f"unknown delivery tag {frame.delivery_tag}"
        if frame.multiple:
            covered = {tag for tag in unacked if tag <= frame.delivery_tag}
        else:
            covered = {frame.delivery_tag}
        unacked -= covered
        settled |= covered
    return settled


async def run(count: int, turns: list[list[int]], track: bool) -> tuple[set[int], int]:
    channel = FakeChannel()
    batcher = AckBatcher(channel, track=track)
    for tag in range(1, count + 1):
        batcher.delivered(tag)
    unacked = set(range(1, count + 1))
    settled: set[int] = set()
    frames = 0
    for turn in turns:
        for tag in turn:
            batcher.ack(tag)
        await asyncio.sleep(0)  # the end-of-turn flush
        written = written_acks(channel)
        frames += len(written)
        now = settle(unacked, written)
        assert now == set(turn), f"acked {sorted(turn)} but settled {sorted(now)}"
        settled |= now
    return settled, frames


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_acks_settle_exactly_the_acked_deliveries(data: st.DataObject) -> None:
    count = data.draw(st.integers(1, 40))
    acked = data.draw(st.permutations(range(1, count + 1)))
    acked = acked[: data.draw(st.integers(0, count))]  # some never acked
    cuts = sorted(data.draw(st.lists(st.integers(0, len(acked)), max_size=6)))
    turns = [
        list(acked[a:b]) for a, b in zip([0, *cuts], [*cuts, len(acked)], strict=True) if b > a
    ]
    track = data.draw(st.booleans())
    settled, _ = asyncio.run(run(count, turns, track))
    assert settled == set(acked)


def test_a_run_from_the_oldest_unacked_is_one_frame() -> None:
    settled, frames = asyncio.run(run(256, [list(range(1, 257))], track=True))
    assert settled == set(range(1, 257))
    assert frames == 1


def test_acks_behind_a_delivery_never_acked_go_one_by_one_and_stop_counting() -> None:
    async def scenario() -> tuple[int, bool]:
        channel = FakeChannel()
        batcher = AckBatcher(channel, track=True)
        for tag in range(1, 11):
            batcher.delivered(tag)
        for tag in range(2, 11):  # tag 1 is still being handled
            batcher.ack(tag)
        await asyncio.sleep(0)
        return len(written_acks(channel)), batcher._outstanding is None

    frames, gave_up = asyncio.run(scenario())
    assert frames == 9
    assert not gave_up
    limit = acks.MAX_PARKED
    try:
        acks.MAX_PARKED = 5
        frames, gave_up = asyncio.run(scenario())
    finally:
        acks.MAX_PARKED = limit
    assert frames == 9
    assert gave_up


# -- RabbitMQDelivery.ack_many: a batch subscriber's batch acked in one call ----------------


def _deliveries(batcher: AckBatcher, count: int) -> list[RabbitMQDelivery]:
    out = []
    for tag in range(1, count + 1):
        batcher.delivered(tag)
        properties = Basic.Properties(headers={}, message_id=f"m{tag}")
        out.append(RabbitMQDelivery(b"body", properties, "t", batcher, tag))
    return out


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_ack_many_acks_each_delivery_once_as_ack_does(data: st.DataObject) -> None:
    """However single acks and ``ack_many`` calls (with repeats, in any order) mix, the frames
    settle exactly the deliveries acked, none twice (a second ack of a tag would close the
    channel with PRECONDITION_FAILED: ``settle`` fails on it)."""
    count = data.draw(st.integers(1, 30))

    async def scenario() -> set[int]:
        channel = FakeChannel()
        batcher = AckBatcher(channel, track=data.draw(st.booleans()))
        deliveries = _deliveries(batcher, count)
        unacked = set(range(1, count + 1))
        settled: set[int] = set()
        for _ in range(data.draw(st.integers(1, 4))):
            if data.draw(st.booleans()):
                await data.draw(st.sampled_from(deliveries)).ack()
            else:
                picked = data.draw(st.lists(st.sampled_from(deliveries), max_size=count * 2))
                await RabbitMQDelivery.ack_many(picked)
            await asyncio.sleep(0)  # the end-of-turn flush
            settled |= settle(unacked, written_acks(channel))
        expected = {d._tag for d in deliveries if d._acks is None}
        assert settled == expected
        return settled

    asyncio.run(scenario())


def test_ack_many_of_a_whole_batch_is_one_frame() -> None:
    async def scenario() -> int:
        channel = FakeChannel()
        batcher = AckBatcher(channel, track=True)
        await RabbitMQDelivery.ack_many(_deliveries(batcher, 256))
        await asyncio.sleep(0)
        return len(written_acks(channel))

    assert asyncio.run(scenario()) == 1


def test_ack_many_on_a_closed_channel_logs_and_leaves_them_to_redelivery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As ``ack``: the channel is gone, RabbitMQ redelivers; nothing raises into the batch."""

    async def scenario() -> None:
        channel = FakeChannel()
        batcher = AckBatcher(channel, track=True)
        deliveries = _deliveries(batcher, 3)
        channel.is_closed = True
        await RabbitMQDelivery.ack_many(deliveries)

    asyncio.run(scenario())
    assert caplog.text.count("RabbitMQ will redeliver it") == 3


def test_the_core_acks_a_rabbitmq_batch_in_one_step() -> None:
    """The core's batch path (``settle.ack_deliveries``) leaves nothing to settle one by one:
    on the old code, without ``ack_many``, every delivery of a RabbitMQ batch came back to get
    a ``Settlement`` of its own."""

    async def scenario() -> tuple[list[Any], int]:
        channel = FakeChannel()
        batcher = AckBatcher(channel, track=True)
        left = await ack_deliveries(_deliveries(batcher, 64))
        await asyncio.sleep(0)
        return left, len(written_acks(channel))

    left, frames = asyncio.run(scenario())
    assert left == []
    assert frames == 1
