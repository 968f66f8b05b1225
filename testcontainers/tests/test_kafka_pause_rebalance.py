"""Kafka on a real broker: a partition paused at a rebalance is consumed again once it is back.

librdkafka keeps a partition's pause across a rebalance: a partition paused, revoked (or lost)
and assigned again stays paused until resumed. The consumer pauses its partitions when its
handlers fall behind (a backlog) or while it holds delayed messages; if it forgot a revoked
partition's pause without resuming it, that partition would never be read again when it came
back (seen on the 3-node cluster: 2,911 messages unhandled after a node's partitions were
lost and reassigned). Here: a blocked handler makes the first consumer pause both partitions,
a second consumer joins (one partition moves to it), the first catches up (its backlog ends),
the second leaves (the partition moves back), and every message, old and new, must be handled.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import zlib
from typing import Any

import pytest

from unimq import Broker, Message

pytest.importorskip("confluent_kafka")

pytestmark = [pytest.mark.realbroker, pytest.mark.asyncio]

PER_KEY = 30


def _keys_on_two_partitions() -> list[str]:
    chosen: dict[int, str] = {}
    for index in range(100):
        key = f"key-{index}"
        chosen.setdefault(zlib.crc32(key.encode()) % 2, key)
        if len(chosen) == 2:
            break
    return [chosen[0], chosen[1]]


async def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)


async def test_partition_paused_at_a_rebalance_is_read_again_when_it_comes_back(
    kafka_broker: Any,
) -> None:
    tag = uuid.uuid4().hex[:8]
    topic, group = f"pause.{tag}.events", f"pause-{tag}"
    keys = _keys_on_two_partitions()
    handled: list[tuple[str, int, int]] = []
    release = asyncio.Event()

    def handler(consumer: int) -> Any:
        async def handle(body: dict[str, int], message: Message) -> None:
            if consumer == 1:
                await release.wait()  # the first consumer's handlers fall behind: a backlog
            handled.append((message.key or "", body["n"], consumer))

        return handle

    options: dict[str, Any] = {"num_partitions": 2, "revoke_timeout": 0.5}
    first, second = Broker(kafka_broker.url, **options), Broker(kafka_broker.url, **options)
    first.subscriber(topic, group=group, concurrency=1)(handler(1))
    second.subscriber(topic, group=group, concurrency=1)(handler(2))
    publisher = Broker(kafka_broker.url, **options)
    try:
        await publisher.connect()
        for n in range(PER_KEY):
            await asyncio.gather(*(publisher.publish(topic, {"n": n}, key=key) for key in keys))
        await first.start()
        await asyncio.sleep(3.0)  # the buffer fills, and after 1 s the backlog pauses both
        await second.start()  # one partition moves to the second consumer (paused on the first)
        await _wait(lambda: any(c == 2 for *_, c in handled), 60, "the second consumer to run")
        release.set()  # the first consumer's backlog ends: it resumes what it still holds
        await asyncio.sleep(3.0)
        await second.stop()  # the moved partition goes back to the first: it must be read
        for n in range(PER_KEY, 2 * PER_KEY):
            await asyncio.gather(*(publisher.publish(topic, {"n": n}, key=key) for key in keys))
        expected = {(k, n) for k in keys for n in range(2 * PER_KEY)}
        await _wait(
            lambda: {(k, n) for k, n, _ in handled} >= expected, 90, "every message handled"
        )
    finally:
        release.set()
        await first.stop()
        await second.stop()
        await publisher.stop()
