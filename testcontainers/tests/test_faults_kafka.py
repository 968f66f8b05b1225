"""Kafka fault tests: broker outage, a killed worker, a rebalancing group, long delays."""

from __future__ import annotations

import asyncio
import signal
import subprocess
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

ck = pytest.importorskip("confluent_kafka")

pytestmark = pytest.mark.realbroker


def _names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"fault.{tag}.events", f"fault-{tag}"


async def _publish(broker: Broker, topic: str, count: int, **kwargs: Any) -> list[str]:
    ids: list[str] = []
    for start in range(0, count, 500):
        receipts = await asyncio.gather(
            *(
                broker.publish(topic, f"m-{i}".encode(), **kwargs)
                for i in range(start, min(count, start + 500))
            )
        )
        ids.extend(r.message_id for r in receipts)
    return ids


async def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)


async def test_broker_restart_with_5000_in_flight(kafka_broker: Any) -> None:
    """(a) Stop and start the broker while 5,000 messages are being published and handled."""
    topic, group = _names()
    runs: Counter[str] = Counter()
    broker = Broker(kafka_broker.url)

    @broker.subscriber(topic, group=group, concurrency=32, idempotent=True)
    async def handle(message: Message) -> None:
        await asyncio.sleep(0.002)
        runs[message.id] += 1

    async with broker:
        publishing = asyncio.create_task(_publish(broker, topic, 5000))
        await _wait(lambda: len(runs) >= 500, 60, "the first 500 deliveries")
        await asyncio.to_thread(kafka_broker.restart)
        ids = await asyncio.wait_for(publishing, 240)
        await _wait(lambda: set(ids) <= set(runs), 240, "every message after the restart")
        await asyncio.sleep(2)  # let redeliveries (if any) arrive
    assert set(runs) == set(ids), "messages lost across the broker restart"
    twice = [mid for mid, n in runs.items() if n > 1]
    assert not twice, f"{len(twice)} message(s) handled more than once despite idempotent=True"


WORKER = textwrap.dedent(
    """
    import asyncio, os, sys
    from unimq import Broker, Message

    url, topic, group, out = sys.argv[1:5]
    broker = Broker(url)
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    @broker.subscriber(topic, group=group, concurrency=16)
    async def handle(message: Message) -> None:
        await asyncio.sleep(0.002)
        os.write(fd, (message.id + "\\n").encode())

    async def main() -> None:
        async with broker:
            os.write(fd, b"ready\\n")
            await asyncio.Event().wait()

    asyncio.run(main())
    """
)


def _spawn_worker(
    url: str, topic: str, group: str, out: Path, script: Path
) -> subprocess.Popen[bytes]:
    # The installed (editable) unimq, not PYTHONPATH=src: a stale src/unimq.egg-info there
    # would hide the adapters' entry points.
    with open(out.with_suffix(".log"), "ab") as log:
        return subprocess.Popen(
            [sys.executable, str(script), url, topic, group, str(out)],
            cwd=script.parent,
            stdout=log,
            stderr=log,
        )


def _lines(path: Path) -> list[str]:
    return (
        [line for line in path.read_text().splitlines() if line and line != "ready"]
        if path.exists()
        else []
    )


async def test_worker_killed_mid_stream_loses_nothing(kafka_broker: Any, tmp_path: Path) -> None:
    """(b) SIGKILL a worker process while it handles a stream; a new worker finishes the job."""
    topic, group = _names()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    first_out, second_out = tmp_path / "first.txt", tmp_path / "second.txt"
    producer = Broker(kafka_broker.url)
    await producer.connect()
    await producer.transport.declare_topic(topic)  # type: ignore[attr-defined]
    worker = _spawn_worker(kafka_broker.url, topic, group, first_out, script)
    successor: subprocess.Popen[bytes] | None = None
    try:
        await _wait(lambda: first_out.exists() and "ready" in first_out.read_text(), 60, "worker")
        ids = await _publish(producer, topic, 3000)
        await _wait(lambda: len(_lines(first_out)) >= 300, 60, "the first worker to make progress")
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        handled_before = len(_lines(first_out))
        successor = _spawn_worker(kafka_broker.url, topic, group, second_out, script)
        await _wait(
            lambda: set(ids) <= set(_lines(first_out)) | set(_lines(second_out)),
            120,
            "the successor to handle what the killed worker had not",
        )
    finally:
        for proc in (worker, successor):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
        await producer.stop()
    assert handled_before < len(ids), "the worker finished before it was killed: kill earlier"


async def test_group_rebalance_under_load_keeps_order(kafka_broker: Any) -> None:
    """(c) A second worker joins mid-stream, then the first leaves: nothing lost, per-key
    order kept for ordered=True."""
    topic, group = _names()
    seen: list[tuple[str, int, int]] = []  # (key, n, worker)
    running: set[str] = set()
    overlaps: list[str] = []

    def make(worker: int) -> Any:
        async def handle(body: dict[str, int], message: Message) -> None:
            key = message.key or ""
            if key in running:
                overlaps.append(key)
            running.add(key)
            await asyncio.sleep(0.003)
            running.discard(key)
            seen.append((key, body["n"], worker))

        return handle

    first, second = Broker(kafka_broker.url), Broker(kafka_broker.url)
    first.subscriber(topic, group=group, ordered=True, concurrency=8)(make(1))
    second.subscriber(topic, group=group, ordered=True, concurrency=8)(make(2))
    keys = [f"k{i}" for i in range(12)]
    total = 150 * len(keys)
    try:
        await first.start()
        publisher = Broker(kafka_broker.url)
        await publisher.connect()

        async def publish_all() -> None:
            for n in range(150):
                await asyncio.gather(*(publisher.publish(topic, {"n": n}, key=key) for key in keys))

        publishing = asyncio.create_task(publish_all())
        await _wait(lambda: len(seen) >= total // 4, 60, "a quarter of the stream")
        await second.start()
        await _wait(lambda: len(seen) >= total // 2, 60, "half of the stream")
        await first.stop()
        await publishing
        await publisher.stop()

        def complete() -> bool:
            return {(k, n) for k, n, _ in seen} >= {(k, n) for k in keys for n in range(150)}

        await _wait(complete, 120, "the rest of the stream on the second worker")
    finally:
        await first.stop()
        await second.stop()
    assert {w for *_, w in seen} == {1, 2}, "both workers should have handled messages"
    for key in keys:
        firsts: list[int] = []
        for k, n, _ in seen:
            if k == key and n not in firsts:
                firsts.append(n)
        assert firsts == list(range(150)), f"key {key}: out of order: {firsts[:20]}"
    assert not overlaps, f"two messages of one key ran at once: {overlaps[:5]}"


async def test_long_delay_routing_and_short_delay_timing(kafka_broker: Any) -> None:
    """(d) A 30-day delay lands in the 1-day tier with the right headers (not waited for);
    a 2-second delay arrives on time."""
    topic, group = _names()
    arrivals: list[float] = []
    broker = Broker(kafka_broker.url)

    @broker.subscriber(topic, group=group)
    async def handle(message: Message) -> None:
        arrivals.append(time.time())

    async with broker:
        published = time.time()
        long = await broker.publish(topic, b"next month", delay=timedelta(days=30), key="k-30d")
        short_at = time.time()
        await broker.publish(topic, b"soon", delay=2.0)
        await _wait(lambda: len(arrivals) >= 1, 20, "the 2-second delay")
        late = arrivals[0] - (short_at + 2.0)
        assert -0.05 <= late <= 1.5 * 2, f"2 s delay arrived {late:+.2f}s off"

    found = await asyncio.to_thread(_find_in_tier, kafka_broker.bootstrap_servers, long.message_id)
    headers, key = found
    assert key == b"k-30d"
    assert headers["unimq-delay-topic"] == topic
    due = int(headers["unimq-delay-due"]) / 1000
    assert abs(due - (published + 30 * 86400)) < 5
    release = int(headers["unimq-delay-release"]) / 1000
    assert abs(release - (published + 86400)) < 5, "first hop should be one 1-day tier"
    assert len(arrivals) == 1, "the 30-day message must not have been delivered"


def _find_in_tier(bootstrap: str, message_id: str) -> tuple[dict[str, str], bytes | None]:
    consumer = ck.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"inspect-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "log_level": 3,
        }
    )
    consumer.subscribe(["unimq.delay.1d"])
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            headers = {k: (v or b"").decode() for k, v in message.headers() or ()}
            if headers.get("unimq-id") == message_id:
                return headers, message.key()
    finally:
        consumer.close()
    raise AssertionError("the 30-day message is not in unimq.delay.1d")
