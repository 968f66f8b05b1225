"""RabbitMQ ``queue_type=stream`` on a real broker: a stream group keeps its position, can be
rewound (``Broker.rewind`` and ``unimq rewind``), has one reader at a time, and passes the
conformance smoke subset. See unimq_rabbitmq.stream and docs/backends/rabbitmq.md."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from unimq_brokers import versions
from unimq_brokers.fixtures import version_params

from unimq import Broker, ConfigurationError, UnsupportedFeatureError
from unimq.cli import main
from unimq.testing.conformance import Backend, Collector, ConformanceSuite

pytestmark = pytest.mark.realbroker

COUNT = 1000
STREAM = {"queue_type": "stream"}


def names() -> tuple[str, str]:
    run = uuid.uuid4().hex[:8]
    return f"stream.{run}", f"g-{run}"


async def consume(
    url: str, topic: str, group: str, expect: int, settle: float, *, refused: bool = False
) -> list[int]:
    """Run the stream group until ``expect`` bodies arrived, then ``settle`` s more (to see
    any extra); the bodies, sorted. ``refused``: a rewind is refused meanwhile (the group is
    being read)."""
    broker = Broker(url, **STREAM)
    got = Collector()

    @broker.subscriber(topic, group=group, concurrency=32)
    async def handle(body: int) -> None:
        got.add(body)

    async with broker:
        if expect:
            await got.wait_for(expect, timeout=60)
        if refused:
            with pytest.raises(ConfigurationError, match="stop its subscribers"):
                await broker.rewind(topic, group, by=600)
        await asyncio.sleep(settle)
    return sorted(got.items)


async def test_rewind_replays_all_then_exactly_the_later_half(
    rabbitmq_broker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000 handled and not read again on a restart; ``unimq rewind --by 10m`` brings all
    1,000 again; ``to`` a time between the halves (published 1 s apart, both sides of it)
    brings exactly the later 500, although RabbitMQ attaches at whole seconds and whole
    chunks (unimq finds the exact message by its publish time)."""
    url = rabbitmq_broker.url
    topic, group = names()
    assert await consume(url, topic, group, 0, 0) == []  # declares the group's stream
    async with Broker(url, **STREAM) as producer:
        await producer.publish_batch(topic, list(range(COUNT // 2)))
        await asyncio.sleep(1.0)
        middle = time.time()
        await asyncio.sleep(1.0)
        await producer.publish_batch(topic, list(range(COUNT // 2, COUNT)))
    handled = await consume(url, topic, group, COUNT, 1.5, refused=True)
    assert handled == list(range(COUNT))
    assert await consume(url, topic, group, 0, 1.5) == []  # the position was kept

    async with Broker(url, **STREAM) as ops:
        assert await ops.rewind(topic, group, by=600, dry_run=True) == COUNT
        assert await ops.transport.lag(topic, group) == 0  # type: ignore[attr-defined]

    monkeypatch.setenv("UNIMQ_RABBITMQ_QUEUE_TYPE", "stream")
    command = ["rewind", topic, group, "--by", "10m", "--url", url]
    assert await asyncio.to_thread(main, command) == 0  # as an operator runs it
    async with Broker(url, **STREAM) as ops:
        assert await ops.transport.lag(topic, group) == COUNT  # type: ignore[attr-defined]
    assert await consume(url, topic, group, COUNT, 1.5) == list(range(COUNT))

    async with Broker(url, **STREAM) as ops:
        assert await ops.rewind(topic, group, to=middle, dry_run=True) == COUNT // 2
        assert await ops.rewind(topic, group, to=middle) == COUNT // 2
        assert await ops.rewind(topic, group, to=time.time()) == 0  # only ever moves back
    assert await consume(url, topic, group, COUNT // 2, 1.5) == list(range(COUNT // 2, COUNT))


async def test_backlog_age_of_a_paused_stream_group_is_the_truth(rabbitmq_broker: Any) -> None:
    """No consumer running (paused); the oldest message the group has not consumed was
    published ~4 s ago: the age is within 1 s of that (as on Kafka and RocketMQ)."""
    url = rabbitmq_broker.url
    topic, group = names()
    await consume(url, topic, group, 0, 0)
    async with Broker(url, **STREAM) as ops:
        transport: Any = ops.transport
        assert await transport.backlog_age(topic, group) == 0.0
        before = time.time()
        await ops.publish(topic, 0)
        published = time.time()
        await asyncio.sleep(2.0)
        await ops.publish(topic, 1)
        await asyncio.sleep(2.0)
        deadline = time.monotonic() + 30
        while await transport.lag(topic, group) != 2:  # RabbitMQ's count: a few seconds old
            assert time.monotonic() < deadline, "lag never reached 2"
            await asyncio.sleep(0.5)
        asked = time.time()
        age = await transport.backlog_age(topic, group)
        answered = time.time()
    assert age is not None, "unknown"
    assert asked - published - 1.0 <= age <= answered - before + 1.0, (age, asked - published)
    assert age >= 3.0  # ~4 s, not the age of the newer message (2 s)
    async with Broker(url) as quorum:  # classic and quorum queues: unknown
        assert await quorum.transport.backlog_age(topic, group) is None  # type: ignore[attr-defined]


async def test_one_instance_reads_a_stream_group_and_a_standby_takes_over(
    rabbitmq_broker: Any,
) -> None:
    """Two instances of one stream group: each message is handled once (a stream gives every
    consumer every message; the group lock lets one read). When the reader stops, the standby
    goes on from the reader's committed offset."""
    url = rabbitmq_broker.url
    topic, group = names()
    seen: list[tuple[int, int]] = []
    instances = [Broker(url, **STREAM), Broker(url, **STREAM)]
    for index, broker in enumerate(instances):

        def make(index: int) -> Any:
            async def handle(body: int) -> None:
                seen.append((body, index))

            return handle

        broker.subscriber(topic, group=group, concurrency=4)(make(index))
        await broker.start()
    try:
        await instances[0].publish_batch(topic, list(range(100)))
        deadline = time.monotonic() + 30
        while len(seen) < 100 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        assert sorted(body for body, _ in seen) == list(range(100))
        reader = seen[0][1]
        assert {index for _, index in seen} == {reader}
        await instances[reader].stop()
        await instances[1 - reader].publish_batch(topic, list(range(100, 150)))
        deadline = time.monotonic() + 30
        while len(seen) < 150 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        assert sorted(body for body, _ in seen) == list(range(150))
        assert {index for body, index in seen if body >= 100} == {1 - reader}
    finally:
        for broker in instances:
            await broker.stop()


async def test_a_dropped_connection_wins_the_lock_again_and_loses_nothing(
    rabbitmq_broker: Any,
) -> None:
    """Handlers held while RabbitMQ closes every connection: the lock went with the old
    connection, the subscription wins it again on the reconnect and reads on from the committed
    offset; every message is handled, later ones too, and the position is kept (a restarted
    group reads nothing again)."""
    if not rabbitmq_broker.can_control:
        pytest.skip("external broker: cannot drop its connections")
    url = rabbitmq_broker.url
    topic, group = names()
    consumer = Broker(url, reconnect_interval=0.5, **STREAM)
    handled: set[int] = set()
    gate = asyncio.Event()

    @consumer.subscriber(topic, group=group, concurrency=2)
    async def handle(body: int) -> None:
        await gate.wait()
        handled.add(body)

    async def wait_for(count: int) -> None:
        deadline = time.monotonic() + 30
        while len(handled) < count:
            assert time.monotonic() < deadline, sorted(handled)
            await asyncio.sleep(0.1)

    await consumer.start()
    try:
        async with Broker(url, **STREAM) as producer:
            await producer.publish_batch(topic, list(range(20)))
        await asyncio.sleep(0.5)
        code, out, err = await asyncio.to_thread(
            rabbitmq_broker.exec,
            ["rabbitmqctl", "close_all_connections", "unimq test: stream lock"],
        )
        assert code == 0, (out, err)
        gate.set()
        await wait_for(20)
        async with Broker(url, **STREAM) as producer:
            await producer.publish_batch(topic, list(range(20, 30)))
        await wait_for(30)
    finally:
        await consumer.stop()
    assert handled == set(range(30))
    assert await consume(url, topic, group, 0, 1.5) == []


async def test_rewind_refusals_are_clear(rabbitmq_broker: Any) -> None:
    """A quorum group cannot be rewound (with either setting), and an unknown group has
    nothing to rewind (``None``, as on Kafka)."""
    url = rabbitmq_broker.url
    topic, group = names()
    quorum = Broker(url)

    @quorum.subscriber(topic, group=group)
    async def handle(body: int) -> None:
        return None

    async with quorum:
        with pytest.raises(UnsupportedFeatureError, match="cannot rewind"):
            await quorum.rewind(topic, group, by=60)
    async with Broker(url, **STREAM) as ops:
        with pytest.raises(UnsupportedFeatureError, match="is not a stream"):
            await ops.rewind(topic, group, by=60)
        assert await ops.rewind(topic, "nobody", by=60) is None


#: The conformance smoke subset less what a stream does not change: broadcast queues (always
#: classic) and the dead-letter holding queues' list/replay session (always quorum).
STREAM_CASES = versions.SMOKE_CASES - {
    "test_broadcast_reaches_every_instance",
    "test_dead_letters_list_replay_round_trip",
}


@versions.only_cases(STREAM_CASES)
@pytest.mark.parametrize(  # the primary version only: the CI budget
    "rabbitmq_broker", version_params("rabbitmq", every_version=False), indirect=True
)
class TestRabbitMQStreamSmoke(ConformanceSuite):
    """The conformance smoke subset with every group queue a stream (on 3.10.8 too, the
    oldest supported: run it with -k Stream and UNIMQ_TEST_BROKER_VERSIONS=all by hand)."""

    @pytest.fixture
    def backend(self, rabbitmq_broker: Any) -> Backend:
        async def restart() -> None:
            await asyncio.to_thread(rabbitmq_broker.restart)

        return Backend(
            url=rabbitmq_broker.url,
            options=dict(STREAM),
            restart=restart if rabbitmq_broker.can_control else None,
            name="rabbitmq-stream",
            time_scale=2.0,
        )
