"""RabbitMQ throughput: unimq vs raw aio-pika vs FastStream, on the same broker, in one run.

Two figures per library, each the median of ``--repeat`` runs:

- durable publish rate: ``--messages`` messages of ``--size`` bytes, ``--in-flight`` publishes
  awaiting their publisher confirm at once (persistent messages, confirms on, for all three);
- end-to-end consume rate: the same number of messages already queued, consumed by a handler
  that does nothing, each acked, with ``--prefetch`` unacked deliveries at once.

Ratios are printed against raw aio-pika. Start a broker yourself and pass ``--url``, or let the
benchmark start the locally built container through the test fixtures (``--container``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika

from unimq import Broker, Message

Runner = Callable[[str, int, int, int, int], Awaitable[float]]


async def _windowed(count: int, in_flight: int, send: Callable[[], Awaitable[Any]]) -> None:
    window = asyncio.Semaphore(in_flight)

    async def one() -> None:
        async with window:
            await send()

    await asyncio.gather(*(one() for _ in range(count)))


def _names(label: str) -> tuple[str, str]:
    run = uuid.uuid4().hex[:8]
    return f"bench.{label}.{run}", f"bench-{label}-{run}"


# -- raw aio-pika -------------------------------------------------------------------------


async def _raw_queue(
    connection: aio_pika.abc.AbstractConnection, topic: str
) -> tuple[aio_pika.abc.AbstractExchange, aio_pika.abc.AbstractQueue]:
    """A confirming channel's exchange and a durable queue bound to it with key ``topic``."""
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.declare_exchange(
        "bench.raw", aio_pika.ExchangeType.DIRECT, durable=True
    )
    queue = await channel.declare_queue(topic, durable=True)
    await queue.bind(exchange, topic)
    return exchange, queue


async def raw_publish(url: str, count: int, size: int, in_flight: int, prefetch: int) -> float:
    topic, _ = _names("raw")
    connection = await aio_pika.connect(url)
    async with connection:
        exchange, queue = await _raw_queue(connection, topic)
        body = b"x" * size

        async def send() -> None:
            message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            await exchange.publish(message, topic, mandatory=True)

        started = time.perf_counter()
        await _windowed(count, in_flight, send)
        elapsed = time.perf_counter() - started
        await queue.delete(if_unused=False, if_empty=False)
    return count / elapsed


async def raw_consume(url: str, count: int, size: int, in_flight: int, prefetch: int) -> float:
    topic, _ = _names("rawc")
    connection = await aio_pika.connect(url)
    async with connection:
        exchange, queue = await _raw_queue(connection, topic)
        body = b"x" * size
        await _windowed(
            count,
            in_flight,
            lambda: exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), topic
            ),
        )
        consume_channel = await connection.channel()
        await consume_channel.set_qos(prefetch_count=prefetch)
        consume_queue = await consume_channel.get_queue(topic)
        done = asyncio.Event()
        seen = 0

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal seen
            await message.ack()
            seen += 1
            if seen == count:
                done.set()

        started = time.perf_counter()
        tag = await consume_queue.consume(on_message)
        await done.wait()
        elapsed = time.perf_counter() - started
        await consume_queue.cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)
    return count / elapsed


# -- unimq --------------------------------------------------------------------------------


async def unimq_publish(url: str, count: int, size: int, in_flight: int, prefetch: int) -> float:
    topic, group = _names("unimq")
    broker = Broker(url, publish_window=in_flight)

    @broker.subscriber(topic, group=group)  # declares the queue, as a service would
    async def handler(message: Message) -> None: ...

    await broker.connect()
    await broker.start()
    await broker.stop()
    async with Broker(url, publish_window=in_flight) as producer:
        body = b"x" * size
        started = time.perf_counter()
        await _windowed(count, in_flight, lambda: producer.publish(topic, body))
        elapsed = time.perf_counter() - started
    await _delete_queues(url, [f"{topic}::{group}", f"{topic}.{group}.retry::{group}"])
    return count / elapsed


async def unimq_consume(url: str, count: int, size: int, in_flight: int, prefetch: int) -> float:
    topic, group = _names("unimqc")
    done = asyncio.Event()
    seen = 0
    consumer = Broker(url)

    @consumer.subscriber(topic, group=group, concurrency=prefetch, dead_letter=False)
    async def handler(message: Message) -> None:
        nonlocal seen
        seen += 1
        if seen == count:
            done.set()

    # Declare the queues, fill them, then measure a fresh consumer draining them.
    declare = Broker(url)
    declare.include_router(_router_of(consumer))
    await declare.start()
    await declare.stop()
    async with Broker(url) as producer:
        body = b"x" * size
        await _windowed(count, in_flight, lambda: producer.publish(topic, body))
    await consumer.connect()  # connection and topology outside the clock, as for the others
    started = time.perf_counter()
    await consumer.start()
    await done.wait()
    elapsed = time.perf_counter() - started
    await consumer.stop()
    await _delete_queues(url, [f"{topic}::{group}", f"{topic}.{group}.retry::{group}"])
    return count / elapsed


def _router_of(broker: Broker) -> Any:
    from unimq import Router

    router = Router()
    for subscriber in broker.subscribers:
        router.add(subscriber)
    return router


async def _delete_queues(url: str, names: list[str]) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)


# -- FastStream ---------------------------------------------------------------------------


async def faststream_publish(
    url: str, count: int, size: int, in_flight: int, prefetch: int
) -> float:
    from faststream.rabbit import RabbitBroker, RabbitExchange, RabbitQueue

    topic, _ = _names("fs")
    broker = RabbitBroker(url, logger=None)
    exchange = RabbitExchange("bench.fs", durable=True)
    queue = RabbitQueue(topic, durable=True, routing_key=topic)
    await broker.start()
    try:
        declared = await broker.declare_queue(queue)
        declared_exchange = await broker.declare_exchange(exchange)
        await declared.bind(declared_exchange, topic)
        body = b"x" * size
        started = time.perf_counter()
        await _windowed(
            count,
            in_flight,
            lambda: broker.publish(
                body, queue=topic, exchange=exchange, persist=True, mandatory=True
            ),
        )
        elapsed = time.perf_counter() - started
        await declared.delete(if_unused=False, if_empty=False)
    finally:
        await broker.stop()
    return count / elapsed


async def faststream_consume(
    url: str, count: int, size: int, in_flight: int, prefetch: int
) -> float:
    from faststream.rabbit import RabbitBroker, RabbitExchange, RabbitQueue

    topic, _ = _names("fsc")
    exchange = RabbitExchange("bench.fs", durable=True)
    queue = RabbitQueue(topic, durable=True, routing_key=topic)
    filler = RabbitBroker(url, logger=None)
    await filler.start()
    declared = await filler.declare_queue(queue)
    declared_exchange = await filler.declare_exchange(exchange)
    await declared.bind(declared_exchange, topic)
    body = b"x" * size
    await _windowed(
        count, in_flight, lambda: filler.publish(body, queue=topic, exchange=exchange, persist=True)
    )
    await filler.stop()

    broker = RabbitBroker(url, logger=None, default_channel=_channel(prefetch))
    done = asyncio.Event()
    seen = 0

    @broker.subscriber(queue, exchange)
    async def handler(body: bytes) -> None:
        nonlocal seen
        seen += 1
        if seen == count:
            done.set()

    started = time.perf_counter()
    await broker.start()
    await done.wait()
    elapsed = time.perf_counter() - started
    await broker.stop()
    await _delete_queues(url, [topic])
    return count / elapsed


def _channel(prefetch: int) -> Any:
    from faststream.rabbit import Channel

    return Channel(prefetch_count=prefetch)


# -- harness ------------------------------------------------------------------------------

LIBRARIES: dict[str, tuple[Runner, Runner]] = {
    "aio-pika (raw)": (raw_publish, raw_consume),
    "unimq": (unimq_publish, unimq_consume),
    "FastStream": (faststream_publish, faststream_consume),
}


async def measure(args: argparse.Namespace, url: str) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, list[float]]] = {
        name: {"publish": [], "consume": []} for name in LIBRARIES
    }
    for name, (publish, _) in LIBRARIES.items():  # warm-up: connections, declarations
        try:
            await publish(url, 500, args.size, args.in_flight, args.prefetch)
        except ImportError as exc:
            print(f"skipping {name}: {exc} (pip install 'unimq[benchmarks]')", file=sys.stderr)
            results.pop(name)
    names = list(results)
    for round_ in range(args.repeat):
        # Rotate who goes first: the broker's state after one library's run (a queue being
        # deleted, messages being flushed to disk) must not always favour the same library.
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            publish, consume = LIBRARIES[name]
            results[name]["publish"].append(
                await publish(url, args.messages, args.size, args.in_flight, args.prefetch)
            )
            results[name]["consume"].append(
                await consume(url, args.messages, args.size, args.in_flight, args.prefetch)
            )
            print(
                f"  round {round_ + 1}: {name:15s} publish {results[name]['publish'][-1]:8.0f}/s"
                f"  consume {results[name]['consume'][-1]:8.0f}/s",
                file=sys.stderr,
            )
    return {
        name: {kind: statistics.median(values) for kind, values in figures.items()}
        for name, figures in results.items()
    }


def report(medians: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    raw = medians["aio-pika (raw)"]
    print(
        f"RabbitMQ throughput, {args.messages} x {args.size}-byte messages, "
        f"{args.in_flight} confirms in flight, prefetch {args.prefetch}, median of {args.repeat}"
    )
    print(f"python {platform.python_version()} on {platform.machine()}, {platform.platform()}")
    print(f"{'library':16s} {'publish/s':>10s} {'ratio':>6s} {'consume/s':>10s} {'ratio':>6s}")
    for name, figures in medians.items():
        print(
            f"{name:16s} {figures['publish']:10.0f} {figures['publish'] / raw['publish']:6.2f}"
            f" {figures['consume']:10.0f} {figures['consume'] / raw['consume']:6.2f}"
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
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--prefetch", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    handle = None
    url = args.url
    if url is None:
        if not args.container:
            parser.error("pass --url amqp://... or --container")
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "testcontainers"))
        from unimq_brokers import get_broker

        handle = get_broker("rabbitmq")
        url = handle.url
    try:
        medians = asyncio.run(measure(args, url))
    finally:
        if handle is not None:
            handle.remove()
    if args.json:
        print(json.dumps(medians, indent=2))
    else:
        report(medians, args)


if __name__ == "__main__":
    main()
