"""The Prometheus plugin on the memory backend: exact counts and lag, read from /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry
from unimq_prometheus import PrometheusMetrics
from unimq_prometheus.scrape import free_port, scrape, value

from unimq import Broker, Message, Reject, RetryPolicy, fixed
from unimq.memory.hub import forget
from unimq.testing.conformance import Collector


@pytest.fixture
def metrics() -> Iterator[tuple[PrometheusMetrics, int]]:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry, lag_interval=None)
    port = free_port()
    server = metrics.serve(port)
    yield metrics, port
    server.shutdown()


async def test_counts_after_known_traffic_are_exact(
    metrics: tuple[PrometheusMetrics, int],
) -> None:
    plugin, port = metrics
    forget("metrics")
    broker = plugin.instrument(Broker("memory://metrics"))
    done = Collector()

    @broker.subscriber(
        "orders", group="billing", retry=RetryPolicy(3, backoff=fixed(0.01)), concurrency=4
    )
    async def bill(body: str, message: Message) -> None:
        if body == "flaky" and message.attempt == 1:
            raise ConnectionError("try again")
        if body == "poison":
            raise Reject("cannot bill")
        done.add(body)

    async with broker:
        for body in ("a", "b", "flaky", "poison", "c"):
            await broker.publish("orders", body)
        await done.wait_for(4)
        await broker.drain()
        samples = await scrape(port)

    def get(name: str, **labels: str) -> float | None:
        return value(samples, name, **labels)

    assert get("unimq_published_total", topic="orders", kind="publish") == 5
    assert get("unimq_published_total", topic="orders", kind="retry") == 1
    assert get("unimq_published_total", topic="orders.billing.dlq", kind="dead-letter") == 1
    assert get("unimq_handled_total", topic="orders", group="billing") == 4
    failed = {"topic": "orders", "group": "billing"}
    assert get("unimq_failed_total", **failed, error_type="ConnectionError") == 1
    assert get("unimq_failed_total", **failed, error_type="Reject") == 1
    assert get("unimq_retried_total", topic="orders", group="billing") == 1
    assert get("unimq_dead_lettered_total", **failed, reason="rejected") == 1
    assert get("unimq_handler_duration_seconds_count", **failed) == 6
    assert get("unimq_in_flight", **failed) == 0


async def test_lag_equals_unconsumed_messages(metrics: tuple[PrometheusMetrics, int]) -> None:
    plugin, port = metrics
    forget("lag")
    consumer = Broker("memory://lag")
    seen = Collector()

    @consumer.subscriber("events", group="audit")
    async def audit(message: Message) -> None:
        seen.add(message.id)

    await consumer.start()  # creates the group
    await consumer.stop()

    producer = plugin.instrument(Broker("memory://lag"))
    plugin.watch_lag(producer, "events", "audit")
    async with producer:
        for _ in range(9):
            await producer.publish("events", b"x")
        await plugin.refresh_lag()
        samples = await scrape(port)
        assert value(samples, "unimq_consumer_lag", topic="events", group="audit") == 9

        async with consumer:
            await seen.wait_for(9)
            await consumer.drain()
            await plugin.refresh_lag()
            samples = await scrape(port)
    assert value(samples, "unimq_consumer_lag", topic="events", group="audit") == 0


async def test_lag_is_refreshed_in_the_background() -> None:
    registry = CollectorRegistry()
    plugin = PrometheusMetrics(registry, lag_interval=0.05)
    forget("lag-bg")
    consumer = Broker("memory://lag-bg")

    @consumer.subscriber("jobs", group="workers")
    async def work(message: Message) -> None:
        raise AssertionError("not reached: the consumer is stopped before publishing")

    await consumer.start()
    await consumer.stop()
    operations = plugin.instrument(Broker("memory://lag-bg"))  # consumes nothing itself
    plugin.watch_lag(operations, "jobs", "workers")
    async with operations:
        for _ in range(3):
            await operations.publish("jobs", b"x")
        labels = {"topic": "jobs", "group": "workers"}
        for _ in range(200):
            if registry.get_sample_value("unimq_consumer_lag", labels) == 3:
                break
            await asyncio.sleep(0.01)
        assert registry.get_sample_value("unimq_consumer_lag", labels) == 3


async def test_rate_limit_metrics_show_the_budget_the_rate_and_the_time_held_back() -> None:
    """25 starts at 50/s with a burst of 1: 24 waits of 20 ms in a row (0.48 s held back, once,
    although 4 workers wait at the same time); on the virtual clock, so a busy machine cannot
    stretch the waits."""
    from unimq import RateLimit
    from unimq.testing import VirtualClock

    registry = CollectorRegistry()
    plugin = PrometheusMetrics(registry, lag_interval=None, rate_window=10)
    port = free_port()
    server = plugin.serve(port)
    forget("ratemetrics")
    clock = VirtualClock()
    broker = plugin.instrument(Broker("memory://ratemetrics", clock=clock))
    starts: list[float] = []

    @broker.subscriber(
        "orders", group="db", concurrency=4, rate_limit=RateLimit(100, per=2.0, burst=1)
    )
    async def write(body: bytes) -> None:
        starts.append(clock.now())

    try:
        async with broker:
            for _ in range(25):
                await broker.publish("orders", b"x")
            for _ in range(100):
                if len(starts) == 25:
                    break
                await clock.advance(0.01)
            await broker.drain()
            samples = await scrape(port)
    finally:
        server.shutdown()
    labels = {"topic": "orders", "group": "db"}
    assert value(samples, "unimq_rate_limit", **labels) == 50
    assert value(samples, "unimq_rate_limit_starts_total", **labels) == 25
    # admitted over the last 10 s of real time: all 25 (the test takes far less than that)
    assert value(samples, "unimq_rate_limit_current", **labels) == 25 / 10
    held = value(samples, "unimq_rate_limit_throttled_seconds_total", **labels)
    assert held == pytest.approx(0.48)
    assert starts[-1] - starts[0] == pytest.approx(0.48)  # the pacing really happened
