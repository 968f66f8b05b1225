"""unimq vs the raw rocketmq-python-client on the same RocketMQ 5 broker.

Measures, median of 3 runs each: durable publish rate (every send awaits its receipt; 500 in
flight at a time on both sides) and end-to-end consume rate (receive + handler + ack), and
prints unimq/raw ratios. FastStream has no RocketMQ support, so there is no third column.

    python benchmarks/rocketmq_throughput.py [--messages 3000]

Starts the test container (testcontainers/unimq_brokers) unless UNIMQ_BENCH_ROCKETMQ_URL and
UNIMQ_BENCH_ROCKETMQ_NAMESRV are set.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "testcontainers"))

import rocketmq  # noqa: E402
from unimq_rocketmq.provisioning import RemotingProvisioner  # noqa: E402

from unimq import Broker, Message  # noqa: E402

WINDOW = 500


async def raw_run(endpoint: str, namesrv: str, count: int) -> tuple[float, float]:
    topic = f"bench_raw_{uuid.uuid4().hex[:8]}"
    group = f"{topic}_g"
    provision = RemotingProvisioner(namesrv=[namesrv])
    await provision("topic", topic, message_type="NORMAL")
    await provision("group", group, orderly=False)
    config = rocketmq.ClientConfiguration(endpoint, rocketmq.Credentials())
    producer = rocketmq.Producer(config, (topic,))
    await asyncio.to_thread(producer.startup)
    started = time.perf_counter()
    for start in range(0, count, WINDOW):
        futures = []
        for i in range(start, min(count, start + WINDOW)):
            message = rocketmq.Message()
            message.topic = topic
            message.body = f"m-{i}".encode()
            futures.append(asyncio.wrap_future(producer.send_async(message)))
        await asyncio.gather(*futures)
    send_rate = count / (time.perf_counter() - started)
    await asyncio.to_thread(producer.shutdown)

    consumer = rocketmq.SimpleConsumer(config, group, {topic: rocketmq.FilterExpression()}, 5)
    await asyncio.to_thread(consumer.startup)
    done = threading.Event()
    received = 0

    def loop() -> None:
        nonlocal received
        while received < count:
            try:
                messages = consumer.receive(32, 30)
            except Exception:
                time.sleep(0.1)
                continue
            for message in messages or ():
                consumer.ack(message)
                received += 1
        done.set()

    started = time.perf_counter()
    threads = [threading.Thread(target=loop, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    await asyncio.to_thread(done.wait, 300)
    consume_rate = count / (time.perf_counter() - started)
    await asyncio.to_thread(consumer.shutdown)
    return send_rate, consume_rate


async def unimq_run(url: str, namesrv: str, count: int) -> tuple[float, float]:
    topic = f"bench.unimq.{uuid.uuid4().hex[:8]}"
    group = f"bench-{uuid.uuid4().hex[:8]}"
    options: dict[str, Any] = {"auto_provision": True, "namesrv": namesrv}
    producer = Broker(url, **options)
    await producer.connect()
    # the subscriber's topic and group exist before publishing (provisioned, not started)
    await producer.transport.declare_topic(topic)  # type: ignore[attr-defined]
    await producer.transport._provision.ensure("group", group, orderly=False)  # type: ignore[attr-defined]
    started = time.perf_counter()
    for start in range(0, count, WINDOW):
        await asyncio.gather(
            *(
                producer.publish(topic, f"m-{i}".encode())
                for i in range(start, min(count, start + WINDOW))
            )
        )
    send_rate = count / (time.perf_counter() - started)
    await producer.stop()

    consumer = Broker(url, **options)
    seen = 0
    finished = asyncio.Event()

    @consumer.subscriber(topic, group=group, concurrency=32)
    async def handle(message: Message) -> None:
        nonlocal seen
        seen += 1
        if seen >= count:
            finished.set()

    started = time.perf_counter()
    await consumer.start()
    await asyncio.wait_for(finished.wait(), 300)
    consume_rate = count / (time.perf_counter() - started)
    await consumer.stop()
    return send_rate, consume_rate


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    url = os.environ.get("UNIMQ_BENCH_ROCKETMQ_URL")
    namesrv = os.environ.get("UNIMQ_BENCH_ROCKETMQ_NAMESRV")
    handle = None
    if not url or not namesrv:
        from unimq_brokers import get_broker

        handle = await asyncio.to_thread(get_broker, "rocketmq")
        url, namesrv = handle.url, handle.namesrv_address
    assert url is not None and namesrv is not None
    endpoint = url.split("://", 1)[1]
    try:
        raw = [await raw_run(endpoint, namesrv, args.messages) for _ in range(args.runs)]
        ours = [await unimq_run(url, namesrv, args.messages) for _ in range(args.runs)]
    finally:
        if handle is not None:
            handle.remove()
    raw_send = statistics.median(r[0] for r in raw)
    raw_consume = statistics.median(r[1] for r in raw)
    our_send = statistics.median(r[0] for r in ours)
    our_consume = statistics.median(r[1] for r in ours)
    print(f"RocketMQ 5, {args.messages} messages, median of {args.runs}")
    print(f"{'':22}{'raw client':>12}{'unimq':>12}{'ratio':>8}")
    print(f"{'publish (durable) /s':22}{raw_send:12.0f}{our_send:12.0f}{our_send / raw_send:8.2f}")
    print(
        f"{'consume (e2e) /s':22}{raw_consume:12.0f}{our_consume:12.0f}"
        f"{our_consume / raw_consume:8.2f}"
    )
    print("FastStream: no RocketMQ support (not measured)")


if __name__ == "__main__":
    asyncio.run(main())
