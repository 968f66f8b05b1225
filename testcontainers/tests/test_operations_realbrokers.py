"""Operations on every real broker: the ``unimq dlq`` command round trip (run as a separate
process, as an operator would) and Prometheus metrics and lag scraped over HTTP."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from unimq_prometheus import PrometheusMetrics
from unimq_prometheus.scrape import free_port, scrape, value

from unimq import Broker, Message, Reject, RetryPolicy, fixed
from unimq.dlq import REPLAYED_AT, DeadLetterQueue
from unimq.testing.conformance import Collector
from unimq.testing.conformance.cases_operations import eventually

pytestmark = pytest.mark.realbroker
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Real:
    name: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    time_scale: float = 1.0

    def broker(self) -> Broker:
        return Broker(self.url, **self.options)


@pytest.fixture(params=["rabbitmq", "kafka", "rocketmq"])
def real(request: pytest.FixtureRequest) -> Real:
    handle = request.getfixturevalue(f"{request.param}_broker")
    if request.param != "rocketmq":
        return Real(request.param, handle.url, time_scale=2.0)
    namesrv = handle.namesrv_address
    return Real(
        "rocketmq",
        handle.url,
        options={"auto_provision": True, "namesrv": namesrv},
        env={"UNIMQ_ROCKETMQ_AUTO_PROVISION": "true", "UNIMQ_ROCKETMQ_NAMESRV": namesrv},
        time_scale=3.0,
    )


async def unimq_cli(real: Real, *args: str) -> tuple[int, str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("UNIMQ_")}
    environment.update(real.env)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "unimq.cli",
        "--log-level",
        "warning",
        *args,
        "--url",
        real.url,
        cwd=ROOT,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 180)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_dlq_command_round_trip(real: Real) -> None:
    """A message fails into the DLQ; ``unimq dlq list`` shows it; ``unimq dlq replay`` sends it
    back; it then succeeds."""
    run = uuid.uuid4().hex[:8]
    topic, group = f"ops.{run}.orders", f"ops-{run}-billing"
    dlq_topic = f"{topic}.{group}.dlq"
    healthy = {"value": False}
    handled: Collector = Collector(real.time_scale)
    broker = real.broker()

    @broker.subscriber(topic, group=group)
    async def bill(message: Message) -> None:
        if not healthy["value"]:
            raise Reject("card declined")
        handled.add((message.id, message.attempt, dict(message.headers)))

    async with broker:
        first = (await broker.publish(topic, b"o-1", key="c-1")).message_id
        second = (await broker.publish(topic, b"o-2", key="c-2")).message_id
        dlq = DeadLetterQueue(broker, dlq_topic)
        await eventually(dlq.count, 2, 30 * real.time_scale, "dead letters")

        code, out, err = await unimq_cli(real, "dlq", "list", dlq_topic)
        assert code == 0, err
        assert f"{dlq_topic}: 2 dead letter(s)" in out
        assert first in out and second in out and "card declined" in out

        healthy["value"] = True
        code, out, err = await unimq_cli(real, "dlq", "replay", dlq_topic, "--id", first)
        assert code == 0, err
        assert "replayed 1 dead letter(s)" in out
        [(replayed, attempt, headers)] = await handled.wait_for(1, timeout=30)
        assert (replayed, attempt) == (first, 1) and REPLAYED_AT in headers

        code, out, err = await unimq_cli(real, "dlq", "replay", dlq_topic, "--all")
        assert code == 0, err
        assert "replayed 1 dead letter(s)" in out
        await handled.wait_for(2, timeout=30)
        await eventually(dlq.count, 0, 60 * real.time_scale, "dead letters after replay")
        code, out, err = await unimq_cli(real, "dlq", "list", dlq_topic)
        assert code == 0 and f"{dlq_topic}: 0 dead letter(s)" in out, (out, err)
        await handled.settle(1.0)
    assert sorted(item[0] for item in handled.items) == sorted([first, second])


async def test_metrics_and_lag_scraped_after_known_traffic(real: Real) -> None:
    run = uuid.uuid4().hex[:8]
    topic, group, idle = f"ops.{run}.jobs", f"ops-{run}-workers", f"ops-{run}-idle"
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry, lag_interval=None)
    port = free_port()
    server = metrics.serve(port)
    try:
        # The idle group exists (started once) but consumes nothing from here on.
        idle_broker = real.broker()

        @idle_broker.subscriber(topic, group=idle)
        async def never(message: Message) -> None:
            raise AssertionError("the idle group is stopped before anything is published")

        await idle_broker.start()
        await idle_broker.stop()

        done: Collector = Collector(real.time_scale)
        broker = metrics.instrument(real.broker())
        metrics.watch_lag(broker, topic, idle)

        @broker.subscriber(topic, group=group, retry=RetryPolicy(3, backoff=fixed(0.5)))
        async def work(body: str, message: Message) -> None:
            if body == "flaky" and message.attempt == 1:
                raise TimeoutError("slow dependency")
            if body == "poison":
                raise Reject("malformed job")
            done.add(body)

        async with broker:
            for body in ("a", "b", "flaky", "poison", "c"):
                await broker.publish(topic, body)
            await done.wait_for(4, timeout=60)
            labels = {"topic": topic, "group": group}

            async def settled() -> tuple[float | None, ...]:
                samples = await scrape(port)
                return (
                    value(samples, "unimq_handled_total", **labels),
                    value(samples, "unimq_dead_lettered_total", **labels, reason="rejected"),
                    value(samples, "unimq_in_flight", **labels),
                )

            await eventually(settled, (4.0, 1.0, 0.0), 30 * real.time_scale, "settled")

            async def lags() -> tuple[float | None, float | None]:
                await metrics.refresh_lag()
                samples = await scrape(port)
                return (
                    value(samples, "unimq_consumer_lag", topic=topic, group=idle),
                    value(samples, "unimq_consumer_lag", **labels),
                )

            await eventually(lags, (5.0, 0.0), 60 * real.time_scale, "lag (idle, working)")
            samples = await scrape(port)
    finally:
        server.shutdown()

    def get(name: str, **extra: str) -> float | None:
        return value(samples, name, **extra)

    assert get("unimq_published_total", topic=topic, kind="publish") == 5
    assert get("unimq_published_total", topic=topic, kind="retry") == 1
    assert get("unimq_failed_total", **labels, error_type="TimeoutError") == 1
    assert get("unimq_failed_total", **labels, error_type="Reject") == 1
    assert get("unimq_retried_total", **labels) == 1
    assert get("unimq_handler_duration_seconds_count", **labels) == 6
    assert get("unimq_consumer_lag", topic=topic, group=idle) == 5
    assert get("unimq_consumer_lag", **labels) == 0
