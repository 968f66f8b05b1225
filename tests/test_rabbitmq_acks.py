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

from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp.commands import Basic
from pamqp.frame import unmarshal
from unimq_rabbitmq import acks
from unimq_rabbitmq.acks import AckBatcher


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
