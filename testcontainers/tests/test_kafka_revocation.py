"""Kafka on a real broker: deliveries of a partition taken away at a rebalance stop.

One consumer holds many slow ordered deliveries of a partition (one running per key, the rest
queued in the key's lane); a second consumer joins the group and takes that partition over.
The deliveries the first one was still holding must not run there any more: the new owner
reads them again from the committed offset, so running them on the old owner too would
handle them twice and interleave the key's order across the two consumers.
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

PER_KEY = 24
HANDLER_SECONDS = 0.4


def _keys_on_two_partitions() -> list[str]:
    """One key per partition of a two-partition topic: librdkafka's default partitioner
    (``consistent_random``) puts a key on ``crc32(key) % partitions``."""
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


async def test_deliveries_of_a_revoked_partition_do_not_run(kafka_broker: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    topic, group = f"revoke.{tag}.events", f"revoke-{tag}"
    keys = _keys_on_two_partitions()
    started: list[tuple[str, int, int]] = []  # (key, n, consumer), when the handler starts

    def handler(consumer: int) -> Any:
        async def handle(body: dict[str, int], message: Message) -> None:
            started.append((message.key or "", body["n"], consumer))
            await asyncio.sleep(HANDLER_SECONDS)

        return handle

    # A short revoke_timeout: the old owner waits only briefly for what it holds, far less
    # than the ~8 queued deliveries per key need (8 x 0.4 s).
    options: dict[str, Any] = {"num_partitions": 2, "revoke_timeout": 1.0}
    first, second = Broker(kafka_broker.url, **options), Broker(kafka_broker.url, **options)
    first.subscriber(topic, group=group, ordered=True, concurrency=8)(handler(1))
    second.subscriber(topic, group=group, ordered=True, concurrency=8)(handler(2))
    publisher = Broker(kafka_broker.url, **options)
    try:
        await publisher.connect()
        for n in range(PER_KEY):
            await asyncio.gather(*(publisher.publish(topic, {"n": n}, key=key) for key in keys))
        await first.start()
        # Wait until the first consumer runs both keys (it owns both partitions): then it
        # holds each partition's head running and its next deliveries queued in the key lanes.
        await _wait(
            lambda: {k for k, _, c in started if c == 1} == set(keys),
            60,
            "the first consumer to run both partitions' keys",
        )
        await second.start()

        def complete() -> bool:
            return {(k, n) for k, n, _ in started} >= {(k, n) for k in keys for n in range(PER_KEY)}

        await _wait(complete, 120, "every message to be handled")
        await asyncio.sleep(2 * HANDLER_SECONDS + 1)  # a late run on the old owner shows up
    finally:
        await first.stop()
        await second.stop()
        await publisher.stop()

    assert any(consumer == 2 for *_, consumer in started), (
        "the second consumer took no partition over: the test did not exercise a handover"
    )
    for key in keys:
        runs = [(n, consumer) for k, n, consumer in started if k == key]
        numbers = [n for n, _ in runs]
        assert numbers == list(range(PER_KEY)), (
            f"key {key}: each message once, in order, across the handover; got {runs}"
        )
        consumers = [consumer for _, consumer in runs]
        if 2 in consumers:
            moved = consumers.index(2)
            assert 1 not in consumers[moved:], (
                f"key {key}: the old owner ran deliveries after its partition moved: {runs}"
            )
