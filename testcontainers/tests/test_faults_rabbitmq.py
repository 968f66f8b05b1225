"""RabbitMQ fault tests: broker restart under load, a worker killed with SIGKILL, long delays."""

from __future__ import annotations

import asyncio
import collections
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from unimq import Broker, Message
from unimq.testing.conformance import Collector
from unimq.testing.conformance.cases_delivery import publish_many

pytestmark = pytest.mark.realbroker
WORKER = Path(__file__).with_name("fault_worker.py")


def unique(name: str) -> str:
    return f"fault.{uuid.uuid4().hex[:8]}.{name}"


async def test_5000_in_flight_survive_a_broker_restart_each_handled_once(
    rabbitmq_broker: Any,
) -> None:
    if not rabbitmq_broker.can_control:
        pytest.skip("external broker: cannot restart it")
    topic, group = unique("restart"), "fault-restart"
    handled: collections.Counter[str] = collections.Counter()
    progress = Collector(time_scale=3)
    consumer = Broker(rabbitmq_broker.url)

    @consumer.subscriber(topic, group=group, idempotent=True, concurrency=16)
    async def handle(message: Message) -> None:
        await asyncio.sleep(0.02)  # about 6 s for all: most are still queued at the restart
        handled[message.id] += 1
        progress.add(message.id)

    async with consumer:
        producer = Broker(rabbitmq_broker.url)
        async with producer:
            ids = await publish_many(producer, topic, [b"x"] * 5000)
        await progress.wait_for(500, timeout=60)
        await asyncio.to_thread(rabbitmq_broker.restart)  # stop + start, data kept
        at_restart = len(handled)
        assert at_restart < len(ids), "all were handled before the restart: the test proves nothing"
        deadline = time.monotonic() + 240
        while not set(ids) <= set(handled) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
    missing = set(ids) - set(handled)
    assert not missing, f"{len(missing)} messages lost across the restart"
    assert len(handled) > at_restart  # the consumer resumed on the new connection
    twice = [i for i, n in handled.items() if n > 1]
    assert not twice, f"{len(twice)} messages handled more than once despite idempotent=True"


async def test_worker_killed_with_sigkill_another_finishes(
    rabbitmq_broker: Any, tmp_path: Path
) -> None:
    topic, group = unique("sigkill"), "fault-sigkill"
    out = tmp_path / "handled.txt"
    out.touch()

    def start_worker() -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, str(WORKER), rabbitmq_broker.url, topic, group, str(out)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        return process

    first = start_worker()
    try:
        async with Broker(rabbitmq_broker.url) as producer:
            ids = await publish_many(producer, topic, [b"x"] * 3000)
        deadline = time.monotonic() + 60
        while len(out.read_text().splitlines()) < 300 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        first.kill()  # SIGKILL: no graceful shutdown, unacked deliveries go back to the queue
        first.wait(10)
        killed_after = len(out.read_text().splitlines())
        assert killed_after < 3000, "the first worker finished before it could be killed"
        second = start_worker()
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                seen = {line.split()[0] for line in out.read_text().splitlines() if line}
                if set(ids) <= seen:
                    break
                await asyncio.sleep(0.2)
        finally:
            second.terminate()
            second.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    seen = {line.split()[0] for line in out.read_text().splitlines() if line}
    assert set(ids) <= seen, f"{len(set(ids) - seen)} messages lost after SIGKILL"


async def test_long_delay_is_routed_through_the_ladder(rabbitmq_broker: Any) -> None:
    from unimq_rabbitmq import topology

    topic = unique("three-days")
    broker = Broker(rabbitmq_broker.url)

    @broker.subscriber(topic, group="fault-delay")
    async def never(message: Message) -> None:
        raise AssertionError("delivered three days early")

    async with broker:
        receipt = await broker.publish(topic, b"later", delay=3 * 24 * 3600)
        seconds = 3 * 24 * 3600 - 1  # rounded down; the core holds it the last second
        level = seconds.bit_length() - 1  # the first queue it waits in: the highest set bit
        connection = await aio_pika.connect(rabbitmq_broker.url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(topology.level_name(level), passive=True)
            found = None
            for _ in range(50):
                message = await queue.get(fail=False, no_ack=False)
                if message is None:
                    await asyncio.sleep(0.1)
                    continue
                if message.message_id == receipt.message_id:
                    found = message
                    await message.ack()  # take it out: nobody waits three days in a test
                    break
                await message.nack(requeue=True)
            assert found is not None, f"the message is not waiting in {topology.level_name(level)}"
            assert found.routing_key in (
                topology.delay_routing_key(seconds, topic),
                topology.delay_routing_key(seconds + 1, topic),
            )
            assert int(found.headers["unimq-deliver-at"]) // 1000 >= int(time.time()) + seconds - 5


async def test_short_delay_arrives_on_time(rabbitmq_broker: Any) -> None:
    topic = unique("two-seconds")
    seen = Collector()
    broker = Broker(rabbitmq_broker.url)

    @broker.subscriber(topic, group="fault-delay")
    async def handle(message: Message) -> None:
        seen.add(time.time())

    async with broker:
        sent = time.time()
        await broker.publish(topic, b"soon", delay=2)
        [arrived] = await seen.wait_for(1, timeout=10)
    assert 2.0 - 0.05 <= arrived - sent <= 3.0, f"arrived after {arrived - sent:.2f}s"
