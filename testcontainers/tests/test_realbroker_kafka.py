"""Smoke test of the Kafka test broker with its raw client (confluent-kafka)."""

from __future__ import annotations

import time
import uuid

import pytest

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

pytestmark = [pytest.mark.realbroker]


def _conf(broker, **extra):
    # log_level 3: librdkafka errors only (a restart produces expected disconnect noise)
    return {"bootstrap.servers": broker.bootstrap_servers, "log_level": 3, **extra}


def _create_topic(broker, name: str, partitions: int = 1) -> None:
    admin = AdminClient(_conf(broker))
    fut = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1)], operation_timeout=30
    )[name]
    fut.result(timeout=60)


def _produce(broker, topic: str, *values: bytes) -> None:
    p = ck.Producer(_conf(broker, acks="all", **{"enable.idempotence": True}))
    errors = []
    for v in values:
        p.produce(topic, v, on_delivery=lambda err, msg: errors.append(err) if err else None)
    assert p.flush(60) == 0, "messages still in flight after 60s"
    assert not errors, errors


def _consume(broker, topic: str, group: str, n: int, timeout: float = 60.0) -> list:
    """Consume n messages and commit them synchronously (the Kafka 'ack')."""
    c = ck.Consumer(
        _conf(
            broker,
            **{"group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False},
        )
    )
    c.subscribe([topic])
    got = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < n and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == ck.KafkaError._PARTITION_EOF:
                    continue
                raise AssertionError(f"consumer error: {m.error()}")
            got.append(m)
            c.commit(message=m, asynchronous=False)
        return got
    finally:
        c.close()


def test_publish_consume_ack(kafka_broker):
    assert kafka_broker.url.startswith("kafka://127.0.0.1:")
    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    _create_topic(kafka_broker, topic)
    _produce(kafka_broker, topic, b"hello")
    msgs = _consume(kafka_broker, topic, "smoke-group", 1)
    assert [m.value() for m in msgs] == [b"hello"]
    # committed ("acked"): the same group sees nothing more
    _produce(kafka_broker, topic, b"second")
    msgs = _consume(kafka_broker, topic, "smoke-group", 1)
    assert [m.value() for m in msgs] == [b"second"]


def test_durable_message_survives_restart(kafka_broker):
    if not kafka_broker.can_control:
        pytest.skip("external broker: cannot restart it")
    topic = f"durable-{uuid.uuid4().hex[:8]}"
    group = f"g-{uuid.uuid4().hex[:8]}"
    _create_topic(kafka_broker, topic)
    _produce(kafka_broker, topic, b"acked-before-restart", b"pending-before-restart")
    first = _consume(kafka_broker, topic, group, 1)
    assert [m.value() for m in first] == [b"acked-before-restart"]

    kafka_broker.restart()

    # the committed offset and the unconsumed message both survived
    after = _consume(kafka_broker, topic, group, 1)
    assert [m.value() for m in after] == [b"pending-before-restart"]
    _produce(kafka_broker, topic, b"after-restart")
    assert [m.value() for m in _consume(kafka_broker, topic, group, 1)] == [b"after-restart"]
