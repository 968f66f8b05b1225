"""Operating over time on real brokers (issue 18): rewinding a consumer group to a point in
time, and the age of its backlog, checked against the truth.

Kept lean for the CI budget: one rewind test and one backlog-age test per backend that can,
1,000 small messages published in batches.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from unimq import Broker
from unimq.cli import main
from unimq.errors import ConfigurationError, UnsupportedFeatureError
from unimq.testing.conformance import Collector
from unimq.transport import SupportsBacklogAge

pytestmark = pytest.mark.realbroker

COUNT = 1000


@dataclass
class Real:
    name: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # the same options for the command line

    def broker(self) -> Broker:
        return Broker(self.url, **self.options)


def kafka(request: pytest.FixtureRequest) -> Real:
    return Real("kafka", request.getfixturevalue("kafka_broker").url)


def rocketmq(request: pytest.FixtureRequest) -> Real:
    handle = request.getfixturevalue("rocketmq_broker")
    options = {"auto_provision": True, "namesrv": handle.namesrv_address}
    env = {"UNIMQ_ROCKETMQ_NAMESRV": handle.namesrv_address}
    return Real("rocketmq", handle.url, options, env)


def rabbitmq(request: pytest.FixtureRequest) -> Real:
    return Real("rabbitmq", request.getfixturevalue("rabbitmq_broker").url)


REWINDABLE: dict[str, Callable[[pytest.FixtureRequest], Real]] = {
    "kafka": kafka,
    "rocketmq": rocketmq,
}


@pytest.fixture(params=sorted(REWINDABLE))
def real(request: pytest.FixtureRequest) -> Real:
    return REWINDABLE[request.param](request)


async def consume(
    real: Real, topic: str, group: str, expect: int, settle: float, *, refused: bool = False
) -> list[int]:
    """Run the group until ``expect`` bodies arrived and then ``settle`` s more (to see any
    extra); the bodies, sorted. ``refused``: check that a rewind is refused meanwhile (Kafka:
    the group has a running member)."""
    broker = real.broker()
    got = Collector()

    @broker.subscriber(topic, group=group, concurrency=32)
    async def handle(body: int) -> None:
        got.add(body)

    async with broker:
        if expect:
            await got.wait_for(expect, timeout=120)
        if refused:
            with pytest.raises(ConfigurationError, match="stop its subscribers"):
                await broker.rewind(topic, group, by=600)
        await asyncio.sleep(settle)
    return sorted(got.items)


async def until(check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.5)


async def test_rewind_redelivers_all_then_exactly_the_later_half(
    real: Real, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000 handled; ``unimq rewind --by 10m`` brings all 1,000 again; ``to`` a time between
    the halves (published 1 s apart, both sides of it: well above the broker's millisecond
    timestamp granularity) brings exactly the later 500."""
    run = uuid.uuid4().hex[:8]
    topic, group = f"rewind.{run}", f"g-{run}"
    first = await consume(real, topic, group, 0, 0)  # the group exists, positioned at the end
    assert first == []
    async with real.broker() as producer:
        await producer.publish_batch(topic, list(range(COUNT // 2)))
        await asyncio.sleep(1.0)
        middle = time.time()
        await asyncio.sleep(1.0)
        await producer.publish_batch(topic, list(range(COUNT // 2, COUNT)))
    assert await consume(real, topic, group, COUNT, 2.0, refused=real.name == "kafka") == list(
        range(COUNT)
    )

    async with real.broker() as ops:
        assert await ops.rewind(topic, group, by=600, dry_run=True) == COUNT

    for name, setting in real.env.items():
        monkeypatch.setenv(name, setting)

    async def rewound() -> bool:  # (Kafka: the group's last member may take a moment to leave)
        command = ["rewind", topic, group, "--by", "10m", "--url", real.url]
        return await asyncio.to_thread(main, command) == 0

    await until(rewound, 30)  # the command line, as an operator runs it
    assert await consume(real, topic, group, COUNT, 2.0) == list(range(COUNT))

    async with real.broker() as ops:
        counted = await ops.rewind(topic, group, to=middle, dry_run=True)
        assert counted == COUNT // 2
        await ops.rewind(topic, group, to=middle)
    assert await consume(real, topic, group, COUNT // 2, 2.0) == list(range(COUNT // 2, COUNT))


async def test_backlog_age_of_a_paused_group_is_the_truth(real: Real) -> None:
    """The group's consumer is stopped (paused); the oldest unconsumed message was published
    ~4 s ago: the reported age is within 1 s of that."""
    run = uuid.uuid4().hex[:8]
    topic, group = f"age.{run}", f"g-{run}"
    await consume(real, topic, group, 0, 0)
    async with real.broker() as ops:
        transport = ops.transport
        assert isinstance(transport, SupportsBacklogAge)
        before = time.time()
        await ops.publish(topic, 0)
        published = time.time()
        await asyncio.sleep(2.0)
        await ops.publish(topic, 1)
        await asyncio.sleep(2.0)

        async def counted() -> bool:
            lag = await transport.lag(topic, group)  # type: ignore[attr-defined]
            return bool(lag == 2)

        await until(counted, 30)
        asked = time.time()
        age = await transport.backlog_age(topic, group)
        answered = time.time()
    # The truth lies between (asked - published) and (answered - before): the publish and the
    # question each take a moment. The age must be within 1 s of that window.
    assert age is not None, "unknown"
    assert asked - published - 1.0 <= age <= answered - before + 1.0, (age, asked - published)
    assert age >= 3.0  # ~4 s, not the age of the newer message (2 s)


@pytest.mark.parametrize("kind", ["rabbitmq"])  # (the parameter names the backend: tiers)
async def test_rabbitmq_refuses_rewind_clearly(request: pytest.FixtureRequest, kind: str) -> None:
    real = rabbitmq(request)
    async with real.broker() as ops:
        with pytest.raises(UnsupportedFeatureError, match="cannot rewind"):
            await ops.rewind("t", "g", by=600)
