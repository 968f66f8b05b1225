"""RabbitMQ batch throughput: unimq's ``publish_batch`` and batch subscribers against RabbitMQ's
own Java load tool, PerfTest 2.22.1, on the same broker, in one run.

Per round (``--repeat`` rounds, the median of each figure is reported):

- PerfTest publish: one producer, ``--messages`` persistent messages of ``--size`` bytes with
  publisher confirms, ``--in-flight`` (64) unconfirmed at once, into a fresh durable queue;
- PerfTest consume: one consumer with qos ``--prefetch`` (256) draining that queue, one ack per
  message (PerfTest's default);
- unimq publish: ``broker.publish_batch`` of ``--batch`` items at a time, awaited one batch
  after the other, into a subscriber's queue (confirms pipelined by the adapter, at most
  ``publish_window`` unconfirmed);
- unimq consume: a batch subscriber (``BatchPolicy(max_size=--batch-size)``, ``--concurrency``
  batches at once) whose handler only counts, draining that queue;
- raw aiormq (the AMQP client under aio-pika, which unimq uses): PerfTest's two runs done with
  the Python client itself, ``--in-flight`` confirms in flight and qos ``--prefetch`` with one
  ack per message. What the Python client reaches is the ceiling of any SDK on it: the report
  prints raw aiormq / PerfTest and unimq / raw aiormq beside the acceptance ratio.

PerfTest's jars (``com.rabbitmq:perf-test:2.22.1`` and its dependencies) are fetched once with
``mvn dependency:copy-dependencies`` (benchmarks/java/perftest/pom.xml) from the machine's
configured Maven source into ``~/.cache/unimq-benchmarks/perftest``; it needs a JDK 11+.

    nice -n -19 python benchmarks/rabbitmq_batch_throughput.py --container
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import time
import uuid
from typing import Any

import aio_pika
import aiormq
from _common import ROOT, cache_dir, load, maven_classpath, median

from unimq import BatchPolicy, Broker

POM = ROOT / "benchmarks" / "java" / "perftest" / "pom.xml"


# -- PerfTest -----------------------------------------------------------------------------


def perftest(classpath: str, url: str, *args: str) -> tuple[float, float]:
    """Run PerfTest; return its (sending, receiving) rate averages, msg/s."""
    command = ["java", "-Xmx256m", "-cp", classpath, "com.rabbitmq.perf.PerfTest", "-h", url]
    done = subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=600, check=False
    )
    out = done.stdout + done.stderr
    sent = re.search(r"sending rate avg: (\d+) msg/s", out)
    received = re.search(r"receiving rate avg: (\d+) msg/s", out)
    if done.returncode != 0 or sent is None or received is None:
        raise RuntimeError(f"PerfTest failed (exit {done.returncode}):\n{out[-3000:]}")
    return float(sent.group(1)), float(received.group(1))


def perftest_round(classpath: str, url: str, args: argparse.Namespace) -> tuple[float, float]:
    queue = f"bench-perftest-{uuid.uuid4().hex[:8]}"
    common = ["-u", queue, "-ad", "false", "-s", str(args.size)]
    publish, _ = perftest(
        classpath, url, *common, "-x", "1", "-y", "0", "-c", str(args.in_flight),
        "-C", str(args.messages), "-f", "persistent",
    )  # fmt: skip
    _, consume = perftest(
        classpath, url, *common, "-x", "0", "-y", "1", "-p", "-q", str(args.prefetch),
        "-D", str(args.messages),
    )  # fmt: skip
    asyncio.run(_delete_queues(url, [queue]))
    return publish, consume


# -- unimq --------------------------------------------------------------------------------


async def unimq_round(url: str, args: argparse.Namespace) -> tuple[float, float]:
    run = uuid.uuid4().hex[:8]
    topic, group = f"bench.batch.{run}", f"bench-batch-{run}"
    count = args.messages
    done = asyncio.Event()
    seen = 0
    consumer = Broker(url)

    @consumer.subscriber(
        topic,
        group=group,
        batch=BatchPolicy(max_size=args.batch_size, max_wait=0.05),
        concurrency=args.concurrency,
        dead_letter=False,
    )
    async def handle(items: list[bytes]) -> None:
        nonlocal seen
        seen += len(items)
        if seen >= count:
            done.set()

    await consumer.start()  # declares the queue; stopped before anything is published
    await consumer.stop()
    body = b"x" * args.size
    async with Broker(url) as producer:
        started = time.perf_counter()
        for start in range(0, count, args.batch):
            await producer.publish_batch(topic, [body] * min(args.batch, count - start))
        publish = count / (time.perf_counter() - started)
    await consumer.connect()
    started = time.perf_counter()
    await consumer.start()
    await asyncio.wait_for(done.wait(), 600)
    consume = count / (time.perf_counter() - started)
    await consumer.stop()
    await _delete_queues(url, [f"{topic}::{group}", f"{topic}.{group}.retry::{group}"])
    return publish, consume


async def _delete_queues(url: str, names: list[str]) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)


# -- raw aiormq ---------------------------------------------------------------------------


async def raw_aiormq_round(url: str, args: argparse.Namespace) -> tuple[float, float]:
    """PerfTest's publish and consume runs done with aiormq: ``--in-flight`` persistent
    publishes awaiting their confirms at once (a window refilled as each confirm arrives), then
    one consumer with qos ``--prefetch`` acking every message on its own."""
    queue = f"bench-raw-{uuid.uuid4().hex[:8]}"
    count = args.messages
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()  # publisher confirms on (aiormq's default)
        await channel.queue_declare(queue, durable=True)
        body = b"x" * args.size
        properties = aiormq.spec.Basic.Properties(delivery_mode=2)
        window = asyncio.Semaphore(args.in_flight)

        async def publish_one() -> None:
            try:
                await channel.basic_publish(body, routing_key=queue, properties=properties)
            finally:
                window.release()

        started = time.perf_counter()
        tasks = []
        for _ in range(count):
            await window.acquire()
            tasks.append(asyncio.ensure_future(publish_one()))
        await asyncio.gather(*tasks)
        publish = count / (time.perf_counter() - started)

        reader = await connection.channel()
        await reader.basic_qos(prefetch_count=args.prefetch)
        done = asyncio.Event()
        seen = 0

        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            nonlocal seen
            await reader.basic_ack(message.delivery.delivery_tag)  # type: ignore[union-attr]
            seen += 1
            if seen >= count:
                done.set()

        started = time.perf_counter()
        ok = await reader.basic_consume(queue, on_message)
        await asyncio.wait_for(done.wait(), 600)
        consume = count / (time.perf_counter() - started)
        await reader.basic_cancel(ok.consumer_tag)
        await channel.queue_delete(queue)
    finally:
        await connection.close()
    return publish, consume


# -- harness ------------------------------------------------------------------------------


def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    classpath = maven_classpath(POM, cache_dir("perftest"))
    figures: dict[str, list[float]] = {
        "perftest_publish": [], "perftest_consume": [], "unimq_publish": [], "unimq_consume": [],
        "raw_publish": [], "raw_consume": [],
    }  # fmt: skip
    loads = [load()]
    perftest_round(classpath, url, argparse.Namespace(**{**vars(args), "messages": 2000}))
    asyncio.run(unimq_round(url, argparse.Namespace(**{**vars(args), "messages": 2000})))
    asyncio.run(raw_aiormq_round(url, argparse.Namespace(**{**vars(args), "messages": 2000})))
    contenders = ["perftest", "unimq", "raw"]
    for round_ in range(args.repeat):
        shift = round_ % len(contenders)  # each contender takes each position in turn
        for who in contenders[shift:] + contenders[:shift]:
            if who == "perftest":
                publish, consume = perftest_round(classpath, url, args)
            elif who == "unimq":
                publish, consume = asyncio.run(unimq_round(url, args))
            else:
                publish, consume = asyncio.run(raw_aiormq_round(url, args))
            figures[f"{who}_publish"].append(publish)
            figures[f"{who}_consume"].append(consume)
            print(
                f"  round {round_ + 1}: {who:8s} publish {publish:8.0f}/s  consume "
                f"{consume:8.0f}/s  (load {load()})",
                file=sys.stderr,
            )
        loads.append(load())
    medians = {name: median(values) for name, values in figures.items()}
    return {"runs": figures, "medians": medians, "load": loads}


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    m = result["medians"]
    print(
        f"RabbitMQ batch throughput, {args.messages} x {args.size} B, median of {args.repeat}; "
        f"PerfTest 2.22.1: {args.in_flight} confirms in flight, qos {args.prefetch}; unimq: "
        f"publish_batch of {args.batch}, BatchPolicy(max_size={args.batch_size}) x "
        f"{args.concurrency}"
    )
    print(f"load average (1/5/15 min) at start and after each round: {' | '.join(result['load'])}")
    print(
        f"{'':10s} {'PerfTest/s':>11s} {'unimq/s':>9s} {'ratio':>6s} {'aiormq/s':>9s} "
        f"{'aiormq/PerfTest':>16s} {'unimq/aiormq':>13s}  runs (PerfTest; unimq; aiormq)"
    )
    runs = result["runs"]
    for kind in ("publish", "consume"):
        java, ours, raw = m[f"perftest_{kind}"], m[f"unimq_{kind}"], m[f"raw_{kind}"]
        who_ran = ("perftest", "unimq", "raw")
        listed = "; ".join(", ".join(f"{v:.0f}" for v in runs[f"{w}_{kind}"]) for w in who_ran)
        print(
            f"{kind:10s} {java:11.0f} {ours:9.0f} {ours / java:6.2f} {raw:9.0f} "
            f"{raw / java:16.2f} {ours / raw:13.2f}  {listed}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="amqp:// URL of a running RabbitMQ")
    parser.add_argument(
        "--container", action="store_true", help="start the locally built test container"
    )
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--in-flight", type=int, default=64, help="PerfTest's confirms in flight")
    parser.add_argument("--prefetch", type=int, default=256, help="PerfTest's consumer qos")
    parser.add_argument("--batch", type=int, default=1000, help="items per publish_batch call")
    parser.add_argument("--batch-size", type=int, default=256, help="BatchPolicy.max_size")
    parser.add_argument("--concurrency", type=int, default=4, help="batches handled at once")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    handle = None
    url = args.url
    if url is None:
        if not args.container:
            parser.error("pass --url amqp://... or --container")
        sys.path.insert(0, str(ROOT / "testcontainers"))
        from unimq_brokers import get_broker

        handle = get_broker("rabbitmq")
        url = handle.url
    url = url.rstrip("/")  # PerfTest reads a trailing "/" as the vhost ""
    try:
        result = measure(url, args)
    finally:
        if handle is not None:
            handle.remove()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        report(result, args)


if __name__ == "__main__":
    main()
