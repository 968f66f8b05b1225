"""``unimq_rabbitmq.inline``: deliveries read by the channel's reader and handed over inline.

Pinned against a fake channel that serves frames as aiormq's does (``_get_frame``): whatever the
bodies' sizes and however they are split into body frames, and however deliveries of inline
consumers and of other consumers interleave, every delivery reaches its own consumer once, in
order, with its body intact; a frame out of place fails the read as aiormq's own does; a
consumer that raises is logged and the reading goes on. And the two aiormq internals the
module leans on are checked on the installed aiormq itself.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import aiormq
import aiormq.channel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from unimq_rabbitmq import inline


class FakeChannel:
    """Frames queued as aiormq queues them; ``_on_deliver_frame`` is aiormq's own way for a
    consumer that is not inline (it records the frame, then reads the message like aiormq)."""

    def __init__(self, frame_buffer: int = 10) -> None:
        self.frames: asyncio.Queue[Any] = asyncio.Queue(maxsize=frame_buffer)
        self.fallback: list[tuple[str, bytes]] = []

    async def _get_frame(self) -> Any:
        return await self.frames.get()

    async def _on_deliver_frame(self, frame: spec.Basic.Deliver) -> None:
        header = await self._get_frame()
        body = b""
        while len(body) < header.body_size:
            body += (await self._get_frame()).value
        self.fallback.append((frame.consumer_tag, body))


def message_frames(tag: str, number: int, body: bytes, frame_size: int) -> list[Any]:
    chunks = [body[i : i + frame_size] for i in range(0, len(body), frame_size)]
    return [
        spec.Basic.Deliver(consumer_tag=tag, delivery_tag=number, routing_key="q", exchange=""),
        ContentHeader(body_size=len(body)),
        *(ContentBody(chunk) for chunk in chunks),
    ]


async def read_all(channel: FakeChannel, reader: Any, count: int) -> None:
    """Run ``count`` deliveries through ``reader`` as aiormq's ``Channel._reader`` does."""
    for _ in range(count):
        frame = await channel._get_frame()
        assert isinstance(frame, spec.Basic.Deliver)
        await reader(frame)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.binary(max_size=300)),
        min_size=1,
        max_size=25,
    ),
    st.integers(min_value=1, max_value=64),
)
def test_every_delivery_reaches_its_consumer_once_in_order_with_its_body(
    messages: list[tuple[bool, bytes]], frame_size: int
) -> None:
    async def scenario() -> None:
        channel = FakeChannel(frame_buffer=0)
        reader = inline.deliveries(channel)
        got: list[tuple[int, bytes]] = []
        reader.consumers["mine"] = lambda m: got.append((m.delivery.delivery_tag, m.body))
        for number, (mine, body) in enumerate(messages, start=1):
            for frame in message_frames("mine" if mine else "other", number, body, frame_size):
                channel.frames.put_nowait(frame)
        await read_all(channel, channel._on_deliver_frame, len(messages))
        expected = [(n, b) for n, (mine, b) in enumerate(messages, start=1) if mine]
        assert got == expected
        assert channel.fallback == [("other", b) for mine, b in messages if not mine]
        assert reader.inlined == len(expected)
        assert channel.frames.empty()

    asyncio.run(scenario())


async def test_a_message_without_a_body_reads_no_body_frame() -> None:
    channel = FakeChannel(frame_buffer=0)
    reader = inline.deliveries(channel)
    got: list[Any] = []
    reader.consumers["mine"] = got.append
    for frame in message_frames("mine", 1, b"", 10) + message_frames("mine", 2, b"x", 10):
        channel.frames.put_nowait(frame)
    await read_all(channel, reader, 2)
    assert [(m.delivery.delivery_tag, m.body, m.channel) for m in got] == [
        (1, b"", channel),
        (2, b"x", channel),
    ]


@pytest.mark.parametrize(
    "frames",
    [
        [ContentBody(b"x")],  # no header
        [ContentHeader(body_size=2), spec.Basic.Ack(delivery_tag=1)],  # no body frame
    ],
)
async def test_a_frame_out_of_place_fails_the_read_as_aiormq_does(frames: list[Any]) -> None:
    channel = FakeChannel(frame_buffer=0)
    reader = inline.deliveries(channel)
    reader.consumers["mine"] = lambda m: None
    for frame in frames:
        channel.frames.put_nowait(frame)
    deliver = spec.Basic.Deliver(consumer_tag="mine", delivery_tag=1, routing_key="q")
    with pytest.raises(ValueError, match="Unexpected frame"):
        await reader(deliver)


async def test_a_consumer_that_raises_is_logged_and_the_next_delivery_still_arrives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    channel = FakeChannel(frame_buffer=0)
    reader = inline.deliveries(channel)
    got: list[int] = []

    def consumer(message: Any) -> None:
        got.append(message.delivery.delivery_tag)
        if len(got) == 1:
            raise RuntimeError("boom")

    reader.consumers["mine"] = consumer
    for number in (1, 2):
        for frame in message_frames("mine", number, b"body", 10):
            channel.frames.put_nowait(frame)
    with caplog.at_level(logging.ERROR, logger="unimq.rabbitmq"):
        await read_all(channel, reader, 2)
    assert got == [1, 2]
    assert "consumer callback failed" in caplog.text


def test_installed_once_per_channel() -> None:
    channel = FakeChannel()
    first = inline.deliveries(channel)
    assert channel._on_deliver_frame is first  # type: ignore[comparison-overlap]
    assert inline.deliveries(channel) is first
    inline.forget(channel, "nobody")  # no error for an unknown tag


def test_the_frame_queue_widens_to_a_prefetch_of_deliveries_and_never_narrows() -> None:
    channel = FakeChannel(frame_buffer=10)
    assert inline.widen_frames(channel, 0) == 10  # no QoS limit: aiormq's bound stays
    assert inline.widen_frames(channel, 100) == 3 * 100 + inline.FRAME_MARGIN
    assert channel.frames.maxsize == 3 * 100 + inline.FRAME_MARGIN
    assert inline.widen_frames(channel, 1) == 3 * 100 + inline.FRAME_MARGIN  # never narrower
    unbounded = FakeChannel(frame_buffer=0)
    assert inline.widen_frames(unbounded, 100) == 0
    assert unbounded.frames.maxsize == 0
    assert inline.widen_frames(object(), 100) == 0  # no frame queue: nothing to widen


async def test_a_widened_queue_takes_a_prefetch_of_frames_without_waiting() -> None:
    channel = FakeChannel(frame_buffer=10)
    inline.widen_frames(channel, 50)
    for number in range(1, 51):
        for frame in message_frames("mine", number, b"x", 10):
            channel.frames.put_nowait(frame)  # would raise QueueFull beyond the bound
    assert channel.frames.qsize() == 150


def test_the_aiormq_internals_this_relies_on() -> None:
    """What inline.py assumes of the installed aiormq (its docstring lists them)."""
    reader_source = inspect.getsource(aiormq.channel.Channel._reader)
    assert "self._on_deliver_frame(frame)" in reader_source
    assert inspect.iscoroutinefunction(aiormq.channel.Channel._get_frame)
    init_source = inspect.getsource(aiormq.channel.Channel.__init__)
    assert "self.frames" in init_source and "asyncio.Queue(" in init_source
    assert isinstance(asyncio.Queue(maxsize=3)._maxsize, int)  # type: ignore[attr-defined]
    assert "consumer_tag" in inspect.signature(aiormq.Channel.basic_consume).parameters
