"""kombu+redis:// throughput: unimq vs raw kombu, on the same redis-server, in one run.

Two figures per library, each the median of ``--repeat`` runs (the runs alternate between the
libraries, so a busy machine slows both alike):

- publish rate: ``--messages`` messages of ``--size`` bytes into one queue; raw kombu calls
  ``Producer.publish`` in a loop on one connection (kombu is synchronous), unimq awaits
  ``broker.publish`` with ``--in-flight`` publishes at once;
- consume rate: the same number of messages already queued, drained by a consumer that acks
  each one, ``--prefetch`` unacked at once (raw kombu: ``Consumer`` + ``drain_events``).

Ratios are printed against raw kombu. Pass ``--url redis://...`` for a running server, or let
the benchmark start a redis-server (no persistence) on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import kombu

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from _common import load, median

from unimq import Broker, Message

Runner = Callable[[str, int, int, int, int], Awaitable[float]]


def _names(label: str) -> tuple[str, str]:
    run = uuid.uuid4().hex[:8]
    return f"bench.{label}.{run}", f"bench-{label}-{run}"


# -- raw kombu ------------------------------------------------------------------------------


def _raw_fill(url: str, queue_name: str, count: int, size: int) -> float:
    with kombu.Connection(url) as connection:
        channel = connection.channel()
        queue = kombu.Queue(queue_name, kombu.Exchange(queue_name, "direct"), queue_name)
        queue(channel).declare()
        producer = kombu.Producer(channel)
        body = b"x" * size
        started = time.perf_counter()
        for _ in range(count):
            producer.publish(
                body, exchange="", routing_key=queue_name, delivery_mode=2, retry=False,
                content_type="application/octet-stream", content_encoding="binary",
            )  # fmt: skip
        return time.perf_counter() - started


def _raw_drain(url: str, queue_name: str, count: int, prefetch: int) -> float:
    seen = 0

    def on_message(message: Any) -> None:
        nonlocal seen
        message.ack()
        seen += 1

    with kombu.Connection(url) as connection:
        channel = connection.channel()
        queue = kombu.Queue(queue_name, kombu.Exchange(queue_name, "direct"), queue_name)
        consumer = kombu.Consumer(
            channel, queues=[queue], on_message=on_message, prefetch_count=prefetch
        )
        started = time.perf_counter()
        with consumer:
            while seen < count:
                try:
                    connection.drain_events(timeout=1)
                except TimeoutError:
                    pass
        elapsed = time.perf_counter() - started
        queue(channel).delete()
        return elapsed


async def raw_publish(url: str, count: int, size: int, in_flight: int, prefetch: int) -> float:
    name, _ = _names("raw")
    elapsed = await asyncio.to_thread(_raw_fill, url, name, count, size)
    await asyncio.to_thread(_raw_drain, url, name, count, prefetch)  # empties it again
    return count / elapsed


async def raw_consume(url: str, count: int, size: int, in_flight: int, prefetch: int) -> float:
    name, _ = _names("rawc")
    await asyncio.to_thread(_raw_fill, url, name, count, size)
    return count / await asyncio.to_thread(_raw_drain, url, name, count, prefetch)


# -- unimq ----------------------------------------------------------------------------------


async def _windowed(count: int, in_flight: int, send: Callable[[], Awaitable[Any]]) -> None:
    window = asyncio.Semaphore(in_flight)

    async def one() -> None:
        async with window:
            await send()

    await asyncio.gather(*(one() for _ in range(count)))


async def _consume(url: str, topic: str, group: str, count: int, prefetch: int) -> float:
    """Declare (once, outside the clock) or drain ``count`` messages; returns the drain time."""
    done = asyncio.Event()
    seen = 0
    consumer = Broker(url)

    @consumer.subscriber(topic, group=group, concurrency=prefetch, dead_letter=False)
    async def handler(message: Message) -> None:
        nonlocal seen
        seen += 1
        if seen >= count:
            done.set()

    await consumer.connect()
    started = time.perf_counter()
    await consumer.start()
    if count:
        await done.wait()
    elapsed = time.perf_counter() - started
    await consumer.stop()
    return elapsed


async def unimq_publish(url: str, count: int, size: int, in_flight: int, prefetch: int) -> float:
    topic, group = _names("unimq")
    unimq_url = "kombu+" + url
    await _consume(unimq_url, topic, group, 0, prefetch)  # declares the group queue
    async with Broker(unimq_url) as producer:
        body = b"x" * size
        started = time.perf_counter()
        await _windowed(count, in_flight, lambda: producer.publish(topic, body))
        elapsed = time.perf_counter() - started
    await _consume(unimq_url, topic, group, count, prefetch)  # empties it again
    return count / elapsed


async def unimq_consume(url: str, count: int, size: int, in_flight: int, prefetch: int) -> float:
    topic, group = _names("unimqc")
    unimq_url = "kombu+" + url
    await _consume(unimq_url, topic, group, 0, prefetch)
    async with Broker(unimq_url) as producer:
        body = b"x" * size
        await _windowed(count, in_flight, lambda: producer.publish(topic, body))
    return count / await _consume(unimq_url, topic, group, count, prefetch)


# -- the run --------------------------------------------------------------------------------

LIBRARIES: dict[str, tuple[Runner, Runner]] = {
    "kombu": (raw_publish, raw_consume),
    "unimq": (unimq_publish, unimq_consume),
}


def start_redis() -> tuple[str, subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    directory = tempfile.mkdtemp(prefix="unimq-bench-redis-")
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", directory],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                sys.exit("redis-server did not start")
            time.sleep(0.05)
    return f"redis://127.0.0.1:{port}/0", process, directory


async def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    results: dict[str, dict[str, list[float]]] = {
        name: {"publish": [], "consume": []} for name in LIBRARIES
    }
    loads = [load()]
    shape = (args.messages, args.size, args.in_flight, args.prefetch)
    for repeat in range(args.repeat):
        for name, (publish, consume) in LIBRARIES.items():
            results[name]["publish"].append(await publish(url, *shape))
            results[name]["consume"].append(await consume(url, *shape))
            print(
                f"run {repeat + 1}/{args.repeat} {name}: publish "
                f"{results[name]['publish'][-1]:.0f}/s, consume "
                f"{results[name]['consume'][-1]:.0f}/s (load {load()})",
                file=sys.stderr,
            )
        loads.append(load())
    medians = {n: {k: median(v) for k, v in r.items()} for n, r in results.items()}
    ratios = {
        kind: medians["unimq"][kind] / medians["kombu"][kind] for kind in ("publish", "consume")
    }
    return {
        "python": platform.python_version(),
        "kombu": kombu.__version__,
        "shape": dict(zip(("messages", "size", "in_flight", "prefetch"), shape, strict=True)),
        "runs": results,
        "medians": medians,
        "unimq_vs_kombu": ratios,
        "load_average": loads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="redis://[:PASSWORD@]HOST:PORT/DB (default: start one)")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--in-flight", type=int, default=100)
    parser.add_argument("--prefetch", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    process = None
    url = args.url
    if url is None:
        url, process, directory = start_redis()
    try:
        report = asyncio.run(run(args, url))
    finally:
        if process is not None:
            process.terminate()
            process.wait(10)
            shutil.rmtree(directory, ignore_errors=True)
    for name, figures in report["medians"].items():
        print(f"{name:6} publish {figures['publish']:8.0f}/s   consume {figures['consume']:8.0f}/s")
    ratios = report["unimq_vs_kombu"]
    print(
        f"unimq / kombu: publish {ratios['publish']:.2f}x, consume {ratios['consume']:.2f}x "
        f"(load average {' -> '.join(report['load_average'])})"
    )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report, out, indent=2)


if __name__ == "__main__":
    main()
