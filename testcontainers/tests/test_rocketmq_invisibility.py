"""RocketMQ on a real broker: a delivery held longer than ``invisible_duration`` stays ours.

A received message is invisible to the group's other consumers for ``invisible_duration``
only; unless the consumer renews it, the broker hands it out again while the first handler
still runs (or while an ordered head waits between in-place retries), and the message is
handled twice, out of order. Both tests run two consumers of one group, so a lapse shows as
a second run.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from unimq import Broker, Message, RetryPolicy

pytest.importorskip("rocketmq")

pytestmark = [pytest.mark.realbroker, pytest.mark.asyncio]

INVISIBLE = 10  # seconds: the smallest invisible_duration the adapter accepts


def _options(broker: Any) -> dict[str, Any]:
    return {
        "auto_provision": True,
        "namesrv": broker.namesrv_address,
        "invisible_duration": INVISIBLE,
    }


def _names(kind: str) -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return f"invisible.{suffix}.{kind}", f"invisible-{suffix}"


async def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.2)


async def test_a_handler_longer_than_the_invisible_duration_runs_once(
    rocketmq_broker: Any,
) -> None:
    topic, group = _names("long")
    runs: list[tuple[int, float]] = []  # (consumer, start)
    finished: list[int] = []

    def handler(consumer: int) -> Any:
        async def handle(message: Message) -> None:
            runs.append((consumer, time.monotonic()))
            await asyncio.sleep(2.5 * INVISIBLE)
            finished.append(consumer)

        return handle

    first = Broker(rocketmq_broker.url, **_options(rocketmq_broker))
    second = Broker(rocketmq_broker.url, **_options(rocketmq_broker))
    first.subscriber(topic, group=group, concurrency=2)(handler(1))
    second.subscriber(topic, group=group, concurrency=2)(handler(2))
    try:
        await first.start()
        await second.start()
        await first.publish(topic, b"slow")
        await _wait(lambda: bool(finished), 6 * INVISIBLE, "the slow handler to finish")
        # Acked now: a lapse would show as a redelivery within one invisible duration
        # (plus the broker's revive scan).
        await asyncio.sleep(INVISIBLE + 5)
    finally:
        await first.stop()
        await second.stop()
    assert len(runs) == 1, (
        f"the message ran {len(runs)} times (consumer, start): {runs}; its invisibility "
        "lapsed while the first handler ran"
    )


async def test_an_ordered_head_retried_in_place_past_the_invisible_duration_keeps_its_key(
    rocketmq_broker: Any,
) -> None:
    topic, group = _names("ordered")
    runs: list[tuple[int, int, int]] = []  # (n, attempt, consumer)
    running: set[int] = set()
    overlaps: list[int] = []
    failures = 3  # retried in place with a 5 s pause each: 15 s > INVISIBLE

    def handler(consumer: int) -> Any:
        async def handle(body: dict[str, int], message: Message) -> None:
            n = body["n"]
            if running:
                overlaps.append(n)
            running.add(n)
            runs.append((n, message.attempt, consumer))
            try:
                await asyncio.sleep(0.1)
                if n == 0 and message.attempt <= failures:
                    raise RuntimeError(f"attempt {message.attempt} fails")
            finally:
                running.discard(n)

        return handle

    policy = RetryPolicy(max_attempts=failures + 1, backoff=lambda attempt: 5.0)
    first = Broker(rocketmq_broker.url, **_options(rocketmq_broker))
    second = Broker(rocketmq_broker.url, **_options(rocketmq_broker))
    first.subscriber(topic, group=group, ordered=True, retry=policy, concurrency=2)(handler(1))
    second.subscriber(topic, group=group, ordered=True, retry=policy, concurrency=2)(handler(2))
    try:
        await first.start()
        await second.start()
        for n in range(2):
            await first.publish(topic, {"n": n}, key="k")
        await _wait(
            lambda: any(n == 1 for n, *_ in runs), 12 * INVISIBLE, "the second message to run"
        )
        await asyncio.sleep(INVISIBLE + 5)  # a lapsed head would come back meanwhile
    finally:
        await first.stop()
        await second.stop()
    expected = [(0, attempt) for attempt in range(1, failures + 2)] + [(1, 1)]
    assert [(n, attempt) for n, attempt, _ in runs] == expected, (
        f"runs (n, attempt, consumer): {runs}; the head's invisibility lapsed during its "
        "in-place retries"
    )
    assert len({consumer for n, _, consumer in runs if n == 0}) == 1, runs
    assert not overlaps, f"two messages of key 'k' ran at once: {overlaps}"
