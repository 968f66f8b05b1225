"""Kafka adapter pieces without a broker: header packing and revoked deliveries.

The real-broker tests (testcontainers/tests/test_kafka_*.py) show the behaviour end to end;
these pin the mechanisms down fast and with many more generated cases.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("confluent_kafka")

import confluent_kafka
from unimq_kafka.headers import PACKED, from_wire, to_wire
from unimq_kafka.offsets import OffsetTracker
from unimq_kafka.options import parse_settings
from unimq_kafka.subscription import KafkaDelivery, delivery_class

from unimq.errors import ConfigurationError
from unimq.url import BrokerURL

NAMES = st.text(min_size=1, max_size=20).filter(lambda n: not n.lower().startswith("unimq-"))


def _as_c_string(text: str) -> str:
    """What librdkafka keeps of a ``str`` handed over as a C string."""
    return text.split("\x00", 1)[0]


@given(st.dictionaries(NAMES, st.text(max_size=20), max_size=6))
def test_packed_headers_survive_c_strings(headers: dict[str, str]) -> None:
    wire = to_wire(headers)
    # The client: names as C strings, text values as C strings, bytes values as they are.
    received = {
        _as_c_string(name): (value if isinstance(value, bytes) else _as_c_string(value).encode())
        for name, value in wire.items()
    }
    decoded = {name: value.decode() for name, value in received.items()}
    assert from_wire(decoded) == headers


def test_headers_without_nul_go_out_unchanged() -> None:
    headers = {"a": "1", "b": ""}
    assert to_wire(headers) is headers
    assert set(to_wire({"a\x00": "x", "b": "y"})) == {"b", PACKED}


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


async def test_a_revoked_partitions_deliveries_say_so_and_stop_counting() -> None:
    tracker = OffsetTracker()
    running, queued, *more = _deliveries(tracker, 4)
    assert not queued.revoked
    states = tracker.begin_revoke([("t", 0)])
    assert tracker.in_flight(states) == 4
    # The core checks each queued delivery before starting it, and drops it.
    assert queued.revoked and all(d.revoked for d in more)
    assert tracker.in_flight(states) == 1  # only the handler that really runs
    await running.ack()
    assert tracker.in_flight(states) == 0
    await queued.ack()  # dropped: a late ack changes nothing
    assert tracker.release([("t", 0)]) == [(("t", 0), 1)]  # only the handled offset


async def test_nothing_of_a_released_partition_is_committed_later() -> None:
    tracker = OffsetTracker()
    first, second = _deliveries(tracker, 2)
    tracker.begin_revoke([("t", 0)])
    assert tracker.release([("t", 0)]) == []
    await first.ack()
    await second.ack()
    assert tracker.due() == []


def test_revoked_is_false_for_an_assigned_partition() -> None:
    tracker = OffsetTracker()
    (delivery,) = _deliveries(tracker, 1)
    assert delivery.revoked is False


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, -1), (-1, -1), (3, 3), ("2", 2)],
)
def test_replication_factor_defaults_to_the_brokers_own(given: object, expected: int) -> None:
    """Issue 15: topics unimq creates (retry, delay tiers, DLQ) follow the cluster's
    ``default.replication.factor`` unless set, instead of RF 1 on a 3-node cluster."""
    options = {} if given is None else {"replication_factor": given}
    settings = parse_settings(BrokerURL.parse("kafka://127.0.0.1:9092"), options)
    assert settings.replication_factor == expected


@pytest.mark.parametrize("bad", [0, -2, True, "many", 1.5j])
def test_replication_factor_refuses_what_kafka_cannot_take(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="replication_factor must be -1"):
        parse_settings(BrokerURL.parse("kafka://127.0.0.1:9092"), {"replication_factor": bad})


def test_several_bootstrap_hosts_reach_librdkafka() -> None:
    settings = parse_settings(BrokerURL.parse("kafka://127.0.0.1:9092,127.0.0.1:9093"), {})
    assert settings.common["bootstrap.servers"] == "127.0.0.1:9092,127.0.0.1:9093"


async def test_send_many_reports_each_item_and_keeps_polling_paused_only_while_queuing() -> None:
    """``send_many`` waits once for every report and says per item what failed; no broker
    here, so each message times out in librdkafka and every item carries its own error."""
    from unimq_kafka.producer import KafkaProducer

    from unimq.errors import PublishError

    producer = KafkaProducer(
        {"bootstrap.servers": "127.0.0.1:1", "message.timeout.ms": 300, "log_level": 0},
        1_000_000,
    )
    producer.start(asyncio.get_running_loop())
    try:
        items = [("t", b"x", None, {"unimq-id": str(n)}) for n in range(5)]
        results = await asyncio.wait_for(producer.send_many(items), 10)
        assert len(results) == 5
        assert all(isinstance(r, PublishError) for r in results)
        assert producer._may_poll.is_set()  # reports flow again once the batch is queued
        assert await producer.send_many([]) == []
    finally:
        await producer.close(timeout=1)
