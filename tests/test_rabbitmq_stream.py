"""RabbitMQ ``queue_type=stream`` without a broker: the option, the capabilities per queue
type, what is refused, and how a stream group's committed offset follows acks that come out of
order. The real broker: testcontainers/tests/test_rabbitmq_stream.py."""

from __future__ import annotations

import asyncio
import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp.commands import Basic
from unimq_rabbitmq import queue_types, stream_rewind
from unimq_rabbitmq.options import RabbitMQOptions
from unimq_rabbitmq.stream_position import Positions, lock_queue, offset_queue
from unimq_rabbitmq.transport import RabbitMQTransport

from unimq.clock import SystemClock
from unimq.errors import ConfigurationError, UnsupportedFeatureError
from unimq.transport import TransportContext
from unimq.url import BrokerURL

URL = BrokerURL.parse("amqp://rabbit:5672/")


def transport(**options: object) -> RabbitMQTransport:
    return RabbitMQTransport(URL, options, TransportContext(SystemClock(), "test"))


def test_stream_is_a_queue_type_from_options_url_and_any_case() -> None:
    assert RabbitMQOptions.parse(URL, {"queue_type": "stream"}).queue_type == "stream"
    assert RabbitMQOptions.parse(URL, {"queue_type": "Stream"}).queue_type == "stream"
    with_query = BrokerURL.parse("amqp://rabbit:5672/?queue_type=stream")
    assert RabbitMQOptions.parse(with_query, {}).queue_type == "stream"
    with pytest.raises(ConfigurationError, match="queue_type") as refused:
        RabbitMQOptions.parse(URL, {"queue_type": "streams"})
    assert "'stream'" in str(refused.value)  # the allowed values are named


def test_only_stream_groups_can_rewind() -> None:
    assert transport(queue_type="stream").capabilities.rewind
    for kind in ("quorum", "classic"):
        capabilities = transport(queue_type=kind).capabilities
        assert not capabilities.rewind
    stream = transport(queue_type="stream").capabilities
    assert stream.ordering and stream.broadcast and stream.revocable and stream.durable
    assert not stream.keeps_unread  # a topic with no group queue still returns a publish


@pytest.mark.parametrize("kind", ["quorum", "classic"])
def test_rewinding_a_queue_says_why_not(kind: str) -> None:
    with pytest.raises(UnsupportedFeatureError, match="queue_type=stream"):
        asyncio.run(transport(queue_type=kind).rewind("t", "g", 0.0))


def test_stream_declares_only_its_type_and_its_position_queues_cannot_clash() -> None:
    assert queue_types.base_arguments("stream") == {"x-queue-type": "stream"}
    # A second "::" never appears in a group queue's name (topic::group, no "::" in either).
    assert offset_queue("t::g") == "t::g::offset" and lock_queue("t::g") == "t::g::active"


def test_committed_offset_waits_for_the_oldest_unacked() -> None:
    positions = Positions(10)
    for offset in (10, 11, 12):
        positions.delivered(offset)
    positions.settled(12)
    positions.settled(11)
    assert positions.next == 10  # 10 is still being handled
    positions.settled(10)
    assert positions.next == 13
    positions.settled(10)  # twice, or from before a reconnect: ignored
    positions.settled(99)
    assert positions.next == 13


def test_the_first_offset_read_is_where_a_new_group_stands() -> None:
    positions = Positions(None)
    assert positions.next is None
    positions.delivered(40)
    assert positions.next == 40
    positions.settled(40)
    assert positions.next == 41


@given(st.integers(1, 40), st.randoms(use_true_random=False))
def test_committed_offset_never_passes_an_unacked_one(count: int, random: object) -> None:
    offsets = list(range(5, 5 + count))
    positions = Positions(5)
    for offset in offsets:
        positions.delivered(offset)
    order = list(offsets)
    random.shuffle(order)  # type: ignore[attr-defined]
    acked: set[int] = set()
    for offset in order:
        positions.settled(offset)
        acked.add(offset)
        assert positions.next is not None
        assert all(o in acked for o in range(5, positions.next))  # everything before: acked
        assert positions.next not in acked or positions.next == 5 + count
    assert positions.next == 5 + count


def test_publish_time_comes_from_unimq_header_then_amqp_timestamp() -> None:
    header = Basic.Properties(headers={"unimq-published-at": "1700000000123"})
    assert stream_rewind._published(header) == pytest.approx(1_700_000_000.123)
    stamped = Basic.Properties(
        headers={}, timestamp=datetime.datetime(2023, 11, 14, tzinfo=datetime.timezone.utc)
    )
    assert stream_rewind._published(stamped) == 1_699_920_000.0
    assert stream_rewind._published(Basic.Properties()) == float("inf")  # unknown: kept
