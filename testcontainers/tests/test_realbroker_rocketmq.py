"""Smoke test of the RocketMQ test broker (5.x proxy, gRPC) with its raw
client (rocketmq-python-client, ``import rocketmq``)."""

from __future__ import annotations

import time
import uuid

import pytest

rocketmq = pytest.importorskip("rocketmq")

pytestmark = [pytest.mark.realbroker]


def _config(broker):
    return rocketmq.ClientConfiguration(broker.endpoint, rocketmq.Credentials())


def _send(broker, topic: str, *bodies: bytes) -> list[str]:
    producer = rocketmq.Producer(_config(broker), (topic,))
    producer.startup()
    try:
        ids = []
        for body in bodies:
            msg = rocketmq.Message()
            msg.topic = topic
            msg.body = body
            ids.append(producer.send(msg).message_id)
        return ids
    finally:
        producer.shutdown()


def _receive_and_ack(broker, topic: str, group: str, n: int, timeout: float = 60.0) -> list[bytes]:
    consumer = rocketmq.SimpleConsumer(_config(broker), group, {topic: rocketmq.FilterExpression()})
    consumer.startup()
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < n:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"received {len(got)}/{n} messages from {topic} within {timeout}s"
                )
            try:
                # max messages, invisible duration (s)
                msgs = consumer.receive(16, 20)
            except (
                Exception
            ) as e:  # settings not yet synced right after startup, long-poll timeouts
                if "settings" in str(e).lower() or "timeout" in str(e).lower() or "40401" in str(e):
                    time.sleep(0.5)
                    continue
                raise
            for m in msgs or []:
                got.append(m.body)
                consumer.ack(m)
        return got
    finally:
        consumer.shutdown()


def _names(prefix: str) -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return f"{prefix}-{suffix}", f"{prefix}-group-{suffix}"


def test_publish_consume_ack(rocketmq_broker):
    assert rocketmq_broker.url.startswith("rocketmq://127.0.0.1:")
    topic, group = _names("smoke")
    rocketmq_broker.create_topic(topic, "NORMAL")
    rocketmq_broker.create_group(group)
    _send(rocketmq_broker, topic, b"hello")
    assert _receive_and_ack(rocketmq_broker, topic, group, 1) == [b"hello"]
    # acked: the next receive only sees new messages
    _send(rocketmq_broker, topic, b"second")
    assert _receive_and_ack(rocketmq_broker, topic, group, 1) == [b"second"]


def test_durable_message_survives_restart(rocketmq_broker):
    if not rocketmq_broker.can_control:
        pytest.skip("external broker: cannot restart it")
    topic, group = _names("durable")
    rocketmq_broker.create_topic(topic, "NORMAL")
    rocketmq_broker.create_group(group)
    _send(rocketmq_broker, topic, b"before-restart")

    rocketmq_broker.restart()

    assert _receive_and_ack(rocketmq_broker, topic, group, 1) == [b"before-restart"]


def test_topic_and_group_helpers(rocketmq_broker):
    """FIFO topic + orderly group via mqadmin; messages of one group arrive in order."""
    topic, group = _names("fifo")
    rocketmq_broker.create_topic(topic, "FIFO")
    rocketmq_broker.create_group(group, orderly=True)
    producer = rocketmq.Producer(_config(rocketmq_broker), (topic,))
    producer.startup()
    try:
        for i in range(3):
            msg = rocketmq.Message()
            msg.topic = topic
            msg.body = f"m{i}".encode()
            msg.message_group = "order-1"
            producer.send(msg)
    finally:
        producer.shutdown()
    assert _receive_and_ack(rocketmq_broker, topic, group, 3) == [b"m0", b"m1", b"m2"]
