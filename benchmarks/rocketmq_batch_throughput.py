"""RocketMQ batch throughput: unimq's ``publish_batch`` and batch subscribers against the raw
``rocketmq-python-client`` on the same RocketMQ 5 broker, with RocketMQ's Java producer on the
same container as the limit, in one run.

Per round (``--repeat`` rounds; the median of each figure is reported):

- raw send loop: ``--messages`` messages, each send awaited before the next
  (``await asyncio.wrap_future(producer.send_async(m))``), the acceptance baseline;
- raw parallel sends: the same client with ``--window`` sends in flight (gathered), for context;
- raw consume loop: one thread, ``receive(32)`` then ``ack`` of each message, until all are in;
- unimq publish: ``publish_batch`` of ``--batch`` items at a time (parallel sends);
- unimq consume: a batch subscriber (``BatchPolicy(max_size=--batch-size)``, ``--concurrency``
  batches at once) whose handler only counts;
- Java producer (only with the test container): ``benchmarks/java/rocketmq/ProducerBench.java``
  run inside the broker's container with the client jars the broker ships, ``--java-threads``
  threads sending synchronously, as the RocketMQ distribution's benchmark producer does.

    nice -n -19 python benchmarks/rocketmq_batch_throughput.py

Starts the test container (testcontainers/unimq_brokers) unless UNIMQ_BENCH_ROCKETMQ_URL and
UNIMQ_BENCH_ROCKETMQ_NAMESRV are set (then the Java producer is not run).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import sys
import threading
import time
import uuid
from typing import Any

from _common import ROOT, load, median

sys.path.insert(0, str(ROOT / "testcontainers"))

import rocketmq
from unimq_rocketmq.provisioning import RemotingProvisioner

from unimq import BatchPolicy, Broker

JAVA = ROOT / "benchmarks" / "java" / "rocketmq" / "ProducerBench.java"


async def _raw_topic(namesrv: str) -> tuple[str, str]:
    topic = f"bench_raw_{uuid.uuid4().hex[:8]}"
    group = f"{topic}_g"
    provision = RemotingProvisioner(namesrv=[namesrv])
    await provision("topic", topic, message_type="NORMAL")
    await provision("group", group, orderly=False)
    return topic, group


def _message(topic: str, body: bytes) -> Any:
    message = rocketmq.Message()
    message.topic = topic
    message.body = body
    return message


async def raw_round(endpoint: str, namesrv: str, args: argparse.Namespace) -> dict[str, float]:
    """The raw client: awaited send loop, parallel sends, then one consume loop over both."""
    topic, group = await _raw_topic(namesrv)
    config = rocketmq.ClientConfiguration(endpoint, rocketmq.Credentials())
    producer = rocketmq.Producer(config, (topic,))
    await asyncio.to_thread(producer.startup)
    body = b"x" * args.size
    count = args.messages
    await asyncio.wrap_future(producer.send_async(_message(topic, body)))  # route, connection
    started = time.perf_counter()
    for _ in range(count):
        await asyncio.wrap_future(producer.send_async(_message(topic, body)))
    loop_rate = count / (time.perf_counter() - started)
    started = time.perf_counter()
    for start in range(0, count, args.window):
        await asyncio.gather(
            *(
                asyncio.wrap_future(producer.send_async(_message(topic, body)))
                for _ in range(min(args.window, count - start))
            )
        )
    parallel_rate = count / (time.perf_counter() - started)
    await asyncio.to_thread(producer.shutdown)

    total = 2 * count + 1
    consumer = rocketmq.SimpleConsumer(config, group, {topic: rocketmq.FilterExpression()}, 30)
    await asyncio.to_thread(consumer.startup)
    received = 0

    def consume_loop() -> None:
        nonlocal received
        deadline = time.monotonic() + 600
        while received < total and time.monotonic() < deadline:
            try:
                messages = consumer.receive(32, 30)
            except Exception:
                time.sleep(0.05)
                continue
            for message in messages or ():
                consumer.ack(message)
                received += 1

    started = time.perf_counter()
    thread = threading.Thread(target=consume_loop, daemon=True)
    thread.start()
    await asyncio.to_thread(thread.join)
    consume_rate = received / (time.perf_counter() - started)
    await asyncio.to_thread(consumer.shutdown)
    return {"raw_send_loop": loop_rate, "raw_parallel": parallel_rate, "raw_consume": consume_rate}


async def unimq_round(url: str, namesrv: str, args: argparse.Namespace) -> dict[str, float]:
    run = uuid.uuid4().hex[:8]
    topic, group = f"bench.batch.{run}", f"bench-batch-{run}"
    options: dict[str, Any] = {"auto_provision": True, "namesrv": namesrv}
    count = args.messages
    consumer = Broker(url, **options)
    seen = 0
    done = asyncio.Event()

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

    body = b"x" * args.size
    async with Broker(url, **options) as producer:
        # the subscriber's topic and group exist before publishing (provisioned, not started)
        await producer.transport.declare_topic(topic)  # type: ignore[attr-defined]
        await producer.transport._provision.ensure("group", group, orderly=False)  # type: ignore[attr-defined]
        await producer.publish_batch(topic, [body])  # route, connection; consumed below
        count += 1
        started = time.perf_counter()
        for start in range(1, count, args.batch):
            await producer.publish_batch(topic, [body] * min(args.batch, count - start))
        publish = (count - 1) / (time.perf_counter() - started)
    await consumer.connect()
    started = time.perf_counter()
    await consumer.start()
    await asyncio.wait_for(done.wait(), 600)
    consume = count / (time.perf_counter() - started)
    await consumer.stop()
    return {"unimq_publish": publish, "unimq_consume": consume}


def java_round(handle: Any, namesrv_inside: str, args: argparse.Namespace) -> dict[str, float]:
    topic = asyncio.run(_raw_topic(handle.namesrv_address))[0]
    source = base64.b64encode(JAVA.read_bytes()).decode()
    script = (
        f"echo {source} | base64 -d > /tmp/ProducerBench.java && "
        '. "$ROCKETMQ_HOME/jvm.sh" 2>/dev/null || ROCKETMQ_HOME=/opt/rocketmq; '
        'exec timeout 150 java -Xms64m -Xmx128m $RMQ_JDK17_OPENS -cp "$ROCKETMQ_HOME/lib/*" '
        f"/tmp/ProducerBench.java {namesrv_inside} {topic} {args.java_threads} "
        f"{args.messages} {args.size}"
    )
    code, out, err = handle.exec(["bash", "-c", script])
    rate = re.search(r"RATE ([0-9.]+)", out)
    failed = re.search(r"FAILED (\d+)", out)
    if failed is not None and failed.group(1) != "0":
        print(f"  Java producer: {failed.group(1)} sends failed", file=sys.stderr)
    if code != 0 or rate is None:
        raise RuntimeError(f"the Java producer failed (exit {code}):\n{out[-2000:]}\n{err[-2000:]}")
    return {"java_producer": float(rate.group(1))}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    url = os.environ.get("UNIMQ_BENCH_ROCKETMQ_URL")
    namesrv = os.environ.get("UNIMQ_BENCH_ROCKETMQ_NAMESRV")
    handle = None
    if not url or not namesrv:
        from unimq_brokers import get_broker

        handle = get_broker("rocketmq")
        url, namesrv = handle.url, handle.namesrv_address
    assert url is not None and namesrv is not None
    endpoint = url.split("://", 1)[1]
    runs: dict[str, list[float]] = {}
    loads = [load()]
    try:
        small = argparse.Namespace(**{**vars(args), "messages": 200})
        asyncio.run(raw_round(endpoint, namesrv, small))  # warm-up
        asyncio.run(unimq_round(url, namesrv, small))
        for round_ in range(args.repeat):
            figures: dict[str, float] = {}
            sides = ["raw", "unimq", "java"]
            for side in sides[round_ % 3 :] + sides[: round_ % 3]:
                if side == "raw":
                    figures |= asyncio.run(raw_round(endpoint, namesrv, args))
                elif side == "unimq":
                    figures |= asyncio.run(unimq_round(url, namesrv, args))
                elif handle is not None and not args.no_java:
                    try:
                        figures |= java_round(handle, "127.0.0.1:9876", args)
                    except RuntimeError as exc:  # reported; the round goes on
                        print(f"  Java producer: {str(exc)[:600]}", file=sys.stderr)
            for name, value in figures.items():
                runs.setdefault(name, []).append(value)
            print(
                f"  round {round_ + 1}: "
                + ", ".join(f"{k} {v:.0f}/s" for k, v in figures.items())
                + f" (load {load()})",
                file=sys.stderr,
            )
            loads.append(load())
    finally:
        if handle is not None:
            handle.remove()
    return {"runs": runs, "medians": {k: median(v) for k, v in runs.items()}, "load": loads}


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    m, runs = result["medians"], result["runs"]
    print(
        f"RocketMQ 5 batch throughput, {args.messages} x {args.size} B, median of {args.repeat}; "
        f"unimq: publish_batch of {args.batch}, BatchPolicy(max_size={args.batch_size}) x "
        f"{args.concurrency}"
    )
    print(f"load average (1/5/15 min) at start and after each round: {' | '.join(result['load'])}")

    def line(label: str, name: str, base: str | None) -> None:
        if name not in m:
            return
        ratio = f"{m[name] / m[base]:6.2f}x {base}" if base else ""
        values = ", ".join(f"{v:.0f}" for v in runs[name])
        print(f"{label:34s} {m[name]:9.0f}/s  {ratio:28s} runs: {values}")

    line("raw awaited send loop", "raw_send_loop", None)
    line(f"raw parallel sends ({args.window} in flight)", "raw_parallel", "raw_send_loop")
    line("unimq publish_batch", "unimq_publish", "raw_send_loop")
    if "unimq_publish" in m and "raw_parallel" in m:
        print(
            f"{'':34s} unimq publish_batch / raw parallel: "
            f"{m['unimq_publish'] / m['raw_parallel']:.2f}x"
        )
    line(f"Java producer ({args.java_threads} threads, limit)", "java_producer", "raw_send_loop")
    if "unimq_publish" in m and "java_producer" in m:
        print(
            f"{'':34s} unimq publish_batch / Java producer: "
            f"{m['unimq_publish'] / m['java_producer']:.2f}x"
        )
    line("raw consume loop", "raw_consume", None)
    line("unimq batch consume", "unimq_consume", "raw_consume")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--window", type=int, default=500, help="raw parallel sends in flight")
    parser.add_argument("--batch", type=int, default=1000, help="items per publish_batch call")
    parser.add_argument("--batch-size", type=int, default=256, help="BatchPolicy.max_size")
    parser.add_argument("--concurrency", type=int, default=4, help="batches handled at once")
    parser.add_argument("--java-threads", type=int, default=64)
    parser.add_argument("--no-java", action="store_true", help="skip the Java producer")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        report(result, args)


if __name__ == "__main__":
    main()
