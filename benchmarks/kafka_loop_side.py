"""The Kafka adapter's consume path on the event loop alone: no broker, no consumer thread.

A ``memory://`` broker whose subscriptions are :class:`~unimq_kafka.subscription.
KafkaSubscription` objects that are never started: N real ``confluent_kafka.Message`` records,
as a unimq publisher writes them (the four reserved headers, a key, 100 bytes; three
partitions, read in runs of ``--run`` records of one partition, as librdkafka's fetches hand
them out) are put where the consumer thread puts them, and the loop is told as the thread
tells it. What is measured is what the event loop spends per message: the adapter's hand-off,
its deliveries, their acks and the offset book-keeping, plus unimq's core. ``--memory`` runs
the same subscriber on a plain ``memory://`` subscription (the core alone) for comparison.

Without a broker the figures do not depend on librdkafka's threads or the machine's load as
much as ``kafka_throughput.py``'s do, and the script runs under ``valgrind --tool=callgrind``
(instruction counts: run it for two values of N and take the difference)::

    python benchmarks/kafka_loop_side.py --mode message --messages 20000 --repeat 5
    python benchmarks/kafka_loop_side.py --mode batch --messages 20000 --repeat 5
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python benchmarks/kafka_loop_side.py --mode batch --messages 12000 --repeat 1

Each run prints the CPU µs per message of the event loop's thread (``time.thread_time``)
between the first handler call and the moment every offset is acknowledged (per-message and
batch subscribers as in ``kafka_throughput.py``: concurrency 64; ``BatchPolicy(max_size=500,
max_wait=0.05)`` with ``list[Message]``). ``--bootstrap host:port`` feeds records consumed
from that broker (pre-loaded once; the consumer is closed before the clock starts) instead of
made ones: a real record converts its headers in C on first read, which made ones do not.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import confluent_kafka

from unimq import BatchPolicy, Broker, Message, envelope
from unimq.transport import SubscriptionSpec

PAYLOAD = bytes(range(100))
PARTITIONS = 3
CONCURRENCY = 64
BATCH = 500


def records(topic: str, n: int, run: int) -> list[Any]:
    """N records over three partitions, in runs of ``run`` records of one partition."""
    now = time.time()
    out: list[Any] = []
    offsets = [0] * PARTITIONS
    partition = 0
    while len(out) < n:
        for _ in range(min(run, n - len(out))):
            wire = envelope.published(None, uuid.uuid4().hex, "application/octet-stream", now)
            out.append(
                confluent_kafka.Message(
                    topic=topic,
                    partition=partition,
                    offset=offsets[partition],
                    key=str(len(out) % 100).encode(),
                    value=PAYLOAD,
                    headers=[(name, value.encode()) for name, value in wire.items()],
                )
            )
            offsets[partition] += 1
        partition = (partition + 1) % PARTITIONS
    return out


def consumed(bootstrap: str, topic: str, n: int) -> list[Any]:
    """The N records of ``topic`` as a consumer reads them (``consume()``'s own objects, whose
    headers are converted on first read, as in a real run); the consumer is closed before the
    measurement starts."""
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"loop-side-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([confluent_kafka.TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    out: list[Any] = []
    deadline = time.monotonic() + 60
    while len(out) < n and time.monotonic() < deadline:
        out.extend(m for m in consumer.consume(500, 1.0) if m.error() is None)
    consumer.close()
    return out


def kafka_subscriptions(broker: Broker, feed: list[Any], subs: list[Any]) -> None:
    """Make ``broker``'s transport hand out never-started Kafka subscriptions, fed ``feed``."""
    from unimq_kafka.subscription import KafkaSubscription

    transport: Any = broker.transport
    capabilities = dataclasses.replace(transport.capabilities, revocable=True)
    broker.capabilities = transport.capabilities = capabilities

    async def subscribe(spec: SubscriptionSpec) -> KafkaSubscription:
        subscription = KafkaSubscription(
            {}, [spec.topic], prefetch=spec.prefetch, name="bench", revoke_timeout=1
        )
        tps = [(spec.topic, p) for p in range(PARTITIONS)]
        subscription._tracker.assign(tps)
        subscription._thread._assigned.update(tps)
        if spec.role == "main":
            subs.append((subscription, feed))
        return subscription

    transport.subscribe = subscribe


def all_acked(subscription: Any, n: int) -> bool:
    tracker = subscription._tracker
    with tracker.lock:
        points = [s.commit_point or 0 for s in tracker._parts.values()]
    return sum(points) >= n


async def run_once(mode: str, n: int, run: int, memory: bool, source: str | None) -> float:
    """CPU seconds from the first handler call until all N are acknowledged."""
    broker = Broker("memory://")
    topic = "bench"
    feed = records(topic, n, run) if source is None or memory else consumed(*source.split("/"), n)
    if source is not None and not memory:
        topic = feed[0].topic()
    subs: list[Any] = []
    if not memory:
        kafka_subscriptions(broker, feed, subs)
    seen = 0
    start = 0.0
    done = asyncio.Event()

    if mode == "message":

        @broker.subscriber(topic, group="g", concurrency=CONCURRENCY)
        async def handle(message: Message) -> None:
            nonlocal seen, start
            if not seen:
                start = time.thread_time()
            seen += 1
            if seen == n:
                done.set()

    else:

        @broker.subscriber(topic, group="g", batch=BatchPolicy(max_size=BATCH, max_wait=0.05))
        async def handle_batch(messages: list[Message]) -> None:
            nonlocal seen, start
            if not seen:
                start = time.thread_time()
            seen += len(messages)
            if seen >= n:
                done.set()

    async with broker:
        if memory:
            for _ in range(n):
                await broker.publish(topic, PAYLOAD)
        else:
            for subscription, records_ in subs:
                subscription._thread._buffer = n  # the whole feed waits to be taken
                subscription._thread._ready.extend(records_)
                subscription._notify()
        gc.collect()
        await asyncio.wait_for(done.wait(), 120)
        if memory:
            await broker.drain(timeout=60)
        else:
            while not all_acked(subs[0][0], n):  # noqa: ASYNC110 (the thread acks nothing here)
                await asyncio.sleep(0.0005)
        return time.thread_time() - start


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["message", "batch"], default="message")
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--run", type=int, default=100, help="records per partition run")
    parser.add_argument("--memory", action="store_true", help="a plain memory:// subscription")
    parser.add_argument(
        "--bootstrap",
        help="a broker: feed records consumed from it (N pre-loaded once) instead of made ones",
    )
    args = parser.parse_args()
    source = None
    if args.bootstrap and not args.memory:
        sys.path.insert(0, str(Path(__file__).parent))
        from kafka_throughput import new_topic, preload

        topic = new_topic(args.bootstrap, "loop-side")
        preload(args.bootstrap, topic, args.messages)
        source = f"{args.bootstrap}/{topic}"
    costs = []
    for _ in range(args.repeat):
        seconds = await run_once(args.mode, args.messages, args.run, args.memory, source)
        costs.append(seconds / args.messages * 1e6)
    where = "memory://" if args.memory else "kafka loop side"
    print(
        f"{where} {args.mode}: CPU µs/msg median {statistics.median(costs):.2f} "
        f"(runs {', '.join(f'{c:.2f}' for c in costs)})"
    )


if __name__ == "__main__":
    asyncio.run(main())
