"""RabbitMQ confirmed publishing (``unimq_rabbitmq.confirms``) against a fake aiormq channel.

The fake channel has the attributes the batcher uses; a fake broker reads the frames from its
write queue the way RabbitMQ does (one delivery tag per ``basic.publish``, counted from 1) and
confirms each on the channel's confirmation map, as aiormq does. What is pinned: a message that
cannot be encoded fails alone, takes no delivery tag, and every other publish's future resolves
to the confirm of exactly its own message; nothing reaches the loop's exception handler.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiormq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp.commands import Basic
from pamqp.frame import unmarshal
from pamqp.header import ContentHeader
from unimq_rabbitmq.confirms import ConfirmBatcher

from unimq.errors import EncodeError, PublishError


class FakeChannel:
    """The aiormq channel attributes :mod:`unimq_rabbitmq.confirms` relies on."""

    publisher_confirms = True
    number = 1
    max_content_size = 131072 - 8
    _split_body = aiormq.Channel._split_body

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.confirmations: dict[int, Any] = {}
        self.delivery_tag = 0
        self.message_id_delivery_tag: dict[str, int] = {}
        self.write_queue: asyncio.Queue[Any] = asyncio.Queue()
        self.is_closed = False
        self.create_future = loop.create_future
        self.create_task = loop.create_task


class FakeBroker:
    """Reads what the batcher wrote and confirms every publish by its delivery tag."""

    def __init__(self, channel: FakeChannel) -> None:
        self.channel = channel
        self.tags: dict[str, int] = {}  # message id -> the tag the broker counted for it

    def take_written(self) -> None:
        queue = self.channel.write_queue
        while not queue.empty():
            data = queue.get_nowait().payload
            while data:
                consumed, _number, frame = unmarshal(data)
                data = data[consumed:]
                if isinstance(frame, Basic.Publish):
                    tag = len(self.tags) + 1
                elif isinstance(frame, ContentHeader):
                    message_id = frame.properties.message_id
                    assert message_id not in self.tags, "a message was written twice"
                    self.tags[message_id] = tag
                    confirmation = self.channel.confirmations.pop(tag, None)
                    if confirmation is not None and not confirmation.done():
                        confirmation.set_result(Basic.Ack(delivery_tag=tag))


BAD = {
    "surrogate header value": lambda p: p.headers.update({"h": "\udc80"}),
    "surrogate header name": lambda p: p.headers.update({"\ud800x": "v"}),
    "message id over 255 bytes": lambda p: setattr(p, "message_id", "i" * 256),
    "content type over 255 bytes": lambda p: setattr(p, "content_type", "t/" + "x" * 300),
}


def properties(message_id: str, bad: str | None) -> Basic.Properties:
    props = Basic.Properties(delivery_mode=2, message_id=message_id, headers={"ok": "1"})
    if bad is not None:
        BAD[bad](props)
    return props


async def run_batch(turns: list[list[str | None]]) -> None:
    loop = asyncio.get_running_loop()
    escaped: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: escaped.append(context))
    channel = FakeChannel()
    batcher = ConfirmBatcher(channel)
    broker = FakeBroker(channel)
    good: dict[str, asyncio.Future[Any]] = {}
    accepted_bad: list[asyncio.Future[Any]] = []  # must not happen: checked last
    for turn, kinds in enumerate(turns):
        for index, bad in enumerate(kinds):
            message_id = f"m{turn}.{index}"
            props = properties(message_id, bad)
            try:
                confirmation = batcher.publish(
                    b"body", exchange="", routing_key="q", properties=props, mandatory=True
                )
            except EncodeError:
                assert bad is not None, f"{message_id} is a good message"
                continue
            if bad is None:
                good[message_id] = confirmation
            else:
                accepted_bad.append(confirmation)
        await asyncio.sleep(0)  # the end of the loop turn: the batch is flushed
        broker.take_written()
    await asyncio.sleep(0)
    for message_id, confirmation in good.items():
        assert confirmation.done(), f"{message_id} was never confirmed"
        answer = confirmation.result()
        assert answer.delivery_tag == broker.tags.get(message_id), f"{message_id}: wrong confirm"
    assert escaped == [], "an exception reached the loop's exception handler"
    assert sorted(broker.tags.values()) == list(range(1, len(good) + 1)), "tags not contiguous"
    assert channel.delivery_tag == len(good)
    assert set(broker.tags) == set(good), "a refused message was written, or a good one not"
    assert channel.confirmations == {}
    assert channel.message_id_delivery_tag == {}
    assert not accepted_bad, "an unencodable message was accepted instead of refused"


turns_strategy = st.lists(
    st.lists(st.one_of(st.none(), st.sampled_from(sorted(BAD))), min_size=0, max_size=12),
    min_size=1,
    max_size=5,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(turns=turns_strategy)
def test_unencodable_publishes_fail_alone_and_take_no_delivery_tag(
    turns: list[list[str | None]],
) -> None:
    asyncio.run(run_batch(turns))


@pytest.mark.parametrize("bad", sorted(BAD))
def test_one_unencodable_publish_between_good_ones(bad: str) -> None:
    asyncio.run(run_batch([[None, bad, None], [None]]))


async def test_a_failing_flush_fails_its_publishes_and_nothing_escapes() -> None:
    """Should joining the frames fail all the same (a bug), the batch's callers get a
    ``PublishError``; the loop's exception handler sees nothing."""
    loop = asyncio.get_running_loop()
    escaped: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: escaped.append(context))
    channel = FakeChannel()
    batcher = ConfirmBatcher(channel)

    def broken(items: Any) -> bytes:
        raise RuntimeError("boom")

    batcher._payload = broken  # type: ignore[method-assign]
    confirmation = batcher.publish(
        b"x", exchange="", routing_key="q", properties=properties("a", None), mandatory=True
    )
    await asyncio.sleep(0)
    with pytest.raises(PublishError):
        await asyncio.wait_for(confirmation, 1)
    assert escaped == []
