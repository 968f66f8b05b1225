"""``KafkaSubscription.close`` is bounded: a consumer whose librdkafka close never returns (seen
in CI after a broker restart: ``rd_kafka_consumer_close`` waiting on its queue) is left behind
with a warning after ``CLOSE_TIMEOUT``, instead of holding the application's shutdown (and its
default executor, which ``asyncio.run`` joins) forever."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from unimq_kafka import subscription as kafka_subscription
from unimq_kafka.subscription import KafkaSubscription


async def test_a_consumer_close_that_never_returns_is_left_behind_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(kafka_subscription, "CLOSE_TIMEOUT", 0.3)
    subscription = KafkaSubscription({}, ["orders"], prefetch=10, name="test", revoke_timeout=1)
    closing: list[bool] = []
    # The thread is told to close, and never says it is done (librdkafka's close hangs).
    monkeypatch.setattr(subscription._thread, "close", lambda: closing.append(True))
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="unimq.kafka"):
        await asyncio.wait_for(subscription.close(), 10)
    assert closing == [True]
    assert 0.25 <= time.monotonic() - started < 5
    assert "did not close within" in caplog.text
    assert "orders" in caplog.text
    await subscription.close()  # closing again does not wait again


async def test_a_consumer_that_closes_is_waited_for_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    subscription = KafkaSubscription({}, ["orders"], prefetch=10, name="test", revoke_timeout=1)
    with caplog.at_level(logging.WARNING, logger="unimq.kafka"):
        await asyncio.wait_for(subscription.close(), 10)  # never started: closes at once
    assert subscription._thread.done.is_set()
    assert "did not close" not in caplog.text
