"""RocketMQ fault tests: broker outage with messages in flight, a SIGKILLed worker, delays.

These stop, start and kill things, so they run against the session's RocketMQ container and
take a minute or two each.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from unimq import Broker, Message
from unimq import headers as h
from unimq.transport import OutgoingMessage

pytest.importorskip("rocketmq")

pytestmark = [pytest.mark.realbroker, pytest.mark.asyncio]

ROOT = Path(__file__).resolve().parents[2]


def _options(broker: Any, **extra: Any) -> dict[str, Any]:
    options: dict[str, Any] = {"auto_provision": True, "namesrv": broker.namesrv_address}
    options.update(extra)
    return options


def _names() -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return f"faults.{suffix}.orders", f"faults-{suffix}"


async def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.2)


async def _publish_all(broker: Broker, topic: str, count: int) -> list[str]:
    ids: list[str] = []
    for start in range(0, count, 250):
        receipts = await asyncio.gather(
            *(broker.publish(topic, f"m-{i}".encode()) for i in range(start, start + 250))
        )
        ids.extend(receipt.message_id for receipt in receipts)
    return ids


async def test_broker_stop_and_start_with_2000_in_flight(rocketmq_broker: Any) -> None:
    if not rocketmq_broker.can_control:
        pytest.skip("external broker: cannot stop it")
    topic, group = _names()
    runs: Counter[str] = Counter()
    broker = Broker(rocketmq_broker.url, **_options(rocketmq_broker, invisible_duration=20))

    @broker.subscriber(topic, group=group, concurrency=16, idempotent=True)
    async def handle(message: Message) -> None:
        await asyncio.sleep(0.005)
        runs[message.id] += 1

    await broker.start()
    try:
        ids = await _publish_all(broker, topic, 2000)
        await _wait(lambda: len(runs) >= 100, 60, "the first 100 deliveries")
        await asyncio.to_thread(rocketmq_broker.stop)
        await asyncio.sleep(2)
        await asyncio.to_thread(rocketmq_broker.start)
        await _wait(lambda: set(ids) <= set(runs), 240, "every message after the restart")
        await asyncio.sleep(3)  # let redeliveries of already handled messages arrive
    finally:
        await broker.stop(timeout=10)
    assert set(ids) <= set(runs), f"{len(set(ids) - set(runs))} messages lost"
    twice = {message_id: n for message_id, n in runs.items() if n > 1}
    assert not twice, f"idempotent subscriber ran {len(twice)} messages more than once"


WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from unimq import Broker, Message
    from unimq.plugins import register_plugin
    import unimq_rocketmq.plugin

    try:  # an editable install made before the adapter existed has no entry point for it
        register_plugin(unimq_rocketmq.plugin, "rocketmq")
    except ValueError:
        pass

    url, namesrv, topic, group, out = sys.argv[1:6]

    async def main() -> None:
        broker = Broker(url, auto_provision=True, namesrv=namesrv, invisible_duration=15)

        @broker.subscriber(topic, group=group, concurrency=8)
        async def handle(message: Message) -> None:
            await asyncio.sleep(0.02)
            with open(out, "a") as sink:
                sink.write(message.id + "\\n")

        async with broker:
            await asyncio.Event().wait()

    asyncio.run(main())
    """
)


def _handled(path: Path) -> set[str]:
    return set(path.read_text().split()) if path.exists() else set()


async def test_sigkilled_worker_is_replaced_without_loss(
    rocketmq_broker: Any, tmp_path: Path
) -> None:
    topic, group = _names()
    out = tmp_path / "handled.txt"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    args = [sys.executable, str(script), rocketmq_broker.url, rocketmq_broker.namesrv_address]
    args += [topic, group, str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "adapters")])}
    producer = Broker(rocketmq_broker.url, **_options(rocketmq_broker))
    await producer.connect()
    first = await asyncio.create_subprocess_exec(*args, env=env)
    second: asyncio.subprocess.Process | None = None
    try:
        await asyncio.sleep(6)  # the worker started and provisioned topic and group
        ids = await _publish_all(producer, topic, 1000)
        await _wait(lambda: len(_handled(out)) >= 100, 90, "the first worker's progress")
        first.send_signal(signal.SIGKILL)
        await asyncio.wait_for(first.wait(), 10)
        before = len(_handled(out))
        assert before < len(ids), "the first worker finished everything before the kill"
        second = await asyncio.create_subprocess_exec(*args, env=env)
        await _wait(lambda: set(ids) <= _handled(out), 180, "the second worker to finish")
    finally:
        for process in (first, second):
            if process is not None and process.returncode is None:
                process.terminate()
                await asyncio.wait_for(process.wait(), 15)
        await producer.stop()
    assert set(ids) <= _handled(out)


async def test_long_delay_is_capped_and_short_delay_arrives_on_time(
    rocketmq_broker: Any,
) -> None:
    topic, group = _names()
    arrived: list[tuple[str, float]] = []
    broker = Broker(rocketmq_broker.url, **_options(rocketmq_broker))
    sent: list[OutgoingMessage] = []

    @broker.subscriber(topic, group=group)
    async def handle(body: str) -> None:
        arrived.append((body, time.time()))

    await broker.start()
    try:
        transport = broker.transport
        publish = transport.publish

        async def spy(message: OutgoingMessage) -> None:
            sent.append(message)
            await publish(message)

        transport.publish = spy  # type: ignore[method-assign]
        # 3 days: beyond the proxy's 1-day cap, so it is sent with the cap and re-hopped.
        start = time.time()
        long = await broker.publish(topic, "in-3-days", delay=timedelta(days=3))
        assert long.deliver_at is not None
        [copy] = sent
        due_ms = int(copy.headers[h.DELIVER_AT])
        assert abs(due_ms / 1000 - (start + 3 * 86400)) < 5
        max_delay = transport.capabilities.max_delay
        assert max_delay is not None and 23 * 3600 <= max_delay < 24 * 3600
        assert copy.deliver_at is not None
        assert abs(copy.deliver_at - (start + max_delay)) < 5
        # 2 seconds: waited for.
        published = time.time()
        await broker.publish(topic, "in-2-seconds", delay=2)
        await _wait(lambda: any(body == "in-2-seconds" for body, _ in arrived), 20, "2 s delay")
        [(_, at)] = [item for item in arrived if item[0] == "in-2-seconds"]
        assert 2.0 - 0.05 <= at - published <= 2.0 + 4.5, f"arrived after {at - published:.2f}s"
        assert all(body != "in-3-days" for body, _ in arrived)
    finally:
        await broker.stop()
