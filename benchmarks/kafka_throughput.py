"""Kafka throughput: unimq vs raw confluent-kafka vs FastStream, on the same broker, in one run.

Two measurements, each the median of ``--repeat`` runs, printed as ratios to raw
confluent-kafka:

- **produce** (durable): N messages of 100 bytes, ``--window`` publishes in flight at a time
  (unimq and FastStream: ``asyncio.gather`` over a window of ``publish`` calls; raw: ``produce``
  a window, then ``flush``). Every client uses ``acks=all``, idempotence and ``linger.ms=5``.
- **consume** (end to end): N messages pre-loaded into a fresh topic; the clock runs from the
  first message a handler sees to the N-th (the consumer-group join is not timed). Handlers
  only count; offsets are committed (raw: an async commit per polled batch; unimq: its
  contiguous-offset commits; FastStream: ``AckPolicy.ACK``, a commit after each message).

Each run also prints the CPU the whole process (Python and librdkafka's threads) spent per
message between the same two clock readings, and the acceptance lines give the CPU ratio beside
the wall-clock one: on a shared machine the wall clock mostly measures the scheduler. ``--only``
runs the named runners alone (comma-separated); ``--consume-only`` skips produce,
``--produce-only`` skips consume; ``--gc-freeze`` calls ``gc.freeze()`` once before the first
runner, as an application would after its start-up (docs/backends/kafka.md).

The report ends with **ceilings**: the ratios an adapter that cost nothing would reach, from
the same run's CPU medians (raw produce-all with the envelope's headers for ``publish_batch``;
the raw loop reading value, key and headers plus unimq's core on ``memory://``, per-message
and batch, for the consume lines; see :func:`ceilings`), and the ratio of that reading loop to
the plain one: what any subscriber of unimq's envelope reaches with a free adapter *and* a free
core. Batch subscribers run twice: with a handler of ``list[Message]`` and with one of
``list[bytes]`` (no Message per record, the cheapest batch handler unimq has).

Broker: ``--bootstrap host:port``, or a container started through the real-broker fixtures
(``testcontainers/unimq_brokers``). FastStream (``pip install "faststream[kafka,confluent]"``)
is skipped if missing. Figures are reported, never asserted.

Run:  python benchmarks/kafka_throughput.py [--messages 20000] [--repeat 3] [--window 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import logging
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uuid_utils
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from unimq import BatchPolicy, Broker, Message, envelope
from unimq.headers import ATTEMPT, BINARY, CONTENT_TYPE, ID, PUBLISHED_AT

FIXTURES = Path(__file__).resolve().parents[1] / "testcontainers"
PAYLOAD = bytes(range(100))
PARTITIONS = 3
LINGER_MS = 5
CONCURRENCY = 64  # unimq subscriber concurrency for the consume run
BATCH = 500  # unimq batch subscriber: max_size

#: The raw loop that also reads each record's value, key and headers (unimq's envelope).
READ = "raw + value/key/headers"

Runner = Callable[[str, int, int], Awaitable[float]]  # bootstrap, n, window -> seconds

#: (wall, process CPU) at each clock reading of the current run: every runner reads the clock
#: exactly twice, at the start and at the end of what it times, so the CPU the whole process
#: (Python and librdkafka's threads) spent in between is ``STAMPS[-1][1] - STAMPS[0][1]``.
#: On a shared machine the wall clock mostly measures the scheduler; CPU time is what the
#: code costs.
STAMPS: list[tuple[float, float]] = []


def stamp() -> float:
    """``time.perf_counter()``, also noting the process's CPU time at that moment."""
    wall = time.perf_counter()
    STAMPS.append((wall, time.process_time()))
    return wall


def cpu_seconds() -> float:
    return STAMPS[-1][1] - STAMPS[0][1] if len(STAMPS) >= 2 else float("nan")


class CollectorClock:
    """Time the garbage collector spends between a run's two clock readings (``gc.callbacks``;
    a collection holds the GIL, so its wall time is the process's time in it), and how many
    full collections that was. Printed beside each run: on this machine a full collection of
    the start-up heap (~35,000 objects) took 10-35 ms, a visible share of a 20,000-message
    run (docs/backends/kafka.md, "Throughput")."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full = 0
        self._started = 0.0
        gc.callbacks.append(self._on_collection)

    def reset(self) -> None:
        self.seconds, self.full = 0.0, 0

    def _on_collection(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif len(STAMPS) == 1:  # inside the timed window
            self.seconds += time.perf_counter() - self._started
            self.full += info["generation"] == 2


COLLECTOR = CollectorClock()


def new_topic(bootstrap: str, kind: str) -> str:
    name = f"bench.{kind}.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])[
        name
    ].result(30)
    time.sleep(0.3)
    return name


def preload(bootstrap: str, topic: str, n: int) -> None:
    """N records on ``topic`` as ``Broker.publish`` writes them: the payload, a key and the
    four reserved headers (id, attempt, content type, published-at; ``envelope.published``),
    so the unimq consume runs read what a unimq publisher sends, like the ``memory://`` run,
    and the raw loops read the same records. (Until 2026-12-02 the records had no headers:
    unimq's envelope then took its slow path, the one for other clients' messages.)"""
    producer = raw_producer(bootstrap)
    now = time.time()
    for i in range(n):
        headers = envelope.published(None, uuid.uuid4().hex, "application/octet-stream", now)
        while True:
            try:
                producer.produce(topic, PAYLOAD, key=str(i % 100).encode(), headers=headers)
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush(60)


# -- produce --------------------------------------------------------------------------------


def raw_producer(bootstrap: str) -> Any:
    """confluent-kafka as every raw runner (and the pre-load) uses it: durable (``acks=all``,
    idempotent) with unimq's linger, so the raw and unimq runs wait for the same things."""
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": LINGER_MS,
        }
    )


def warmed_up(producer: Any, topic: str) -> Any:
    """``producer`` after one message to ``topic``: metadata and the producer id fetched before
    the clock starts."""
    producer.produce(topic, PAYLOAD)
    producer.flush(30)
    return producer


def error_reports() -> tuple[list[Any], Callable[[Any, Any], None]]:
    """A delivery-report callback (a plain closure, as a raw-client user writes one) and the
    list of the errors it was told of."""
    errors: list[Any] = []

    def report(error: Any, _message: Any) -> None:
        if error is not None:
            errors.append(error)

    return errors, report


async def produce_raw(bootstrap: str, n: int, window: int) -> float:
    topic = new_topic(bootstrap, "raw")
    producer = warmed_up(raw_producer(bootstrap), topic)
    errors, report = error_reports()
    start = stamp()
    for base in range(0, n, window):
        for _ in range(min(window, n - base)):
            producer.produce(topic, PAYLOAD, on_delivery=report)
        producer.flush(60)
    elapsed = stamp() - start
    if errors:
        raise RuntimeError(f"raw produce: {len(errors)} errors")
    return elapsed


async def produce_raw_all(bootstrap: str, n: int, window: int) -> float:
    """The raw client's best case: produce all N, then one flush."""
    topic = new_topic(bootstrap, "raw-all")
    producer = warmed_up(raw_producer(bootstrap), topic)
    errors, report = error_reports()
    start = stamp()
    for _ in range(n):
        producer.produce(topic, PAYLOAD, on_delivery=report)
    producer.flush(60)
    elapsed = stamp() - start
    if errors:
        raise RuntimeError(f"raw produce: {len(errors)} errors")
    return elapsed


async def produce_raw_all_headers(bootstrap: str, n: int, window: int) -> float:
    """Produce-all-then-flush with exactly the headers unimq writes for a plain publish
    (``envelope.published``: ``unimq-id``, ``unimq-attempt``, ``unimq-content-type``,
    ``unimq-published-at``), a fresh id per record made as a raw-client user would make it
    cheaply (``str(uuid_utils.uuid7())``: the id format unimq promises, ~0.2 us; stdlib
    ``uuid.uuid4().hex`` costs ~2 us) and one publish time for the batch, as unimq's
    ``publish_batch`` stamps it. The baseline unimq's own Python is measured against once the
    envelope's cost in librdkafka (about as much as the raw produce itself) is on both sides."""
    topic = new_topic(bootstrap, "raw-all-h")
    producer = warmed_up(raw_producer(bootstrap), topic)
    errors, report = error_reports()
    uuid7 = uuid_utils.uuid7
    start = stamp()
    published_at = str(int(time.time() * 1000))
    for _ in range(n):
        headers = {
            ID: str(uuid7()),
            ATTEMPT: "1",
            CONTENT_TYPE: BINARY,
            PUBLISHED_AT: published_at,
        }
        producer.produce(topic, PAYLOAD, headers=headers, on_delivery=report)
    producer.flush(60)
    elapsed = stamp() - start
    if errors:
        raise RuntimeError(f"raw produce: {len(errors)} errors")
    return elapsed


async def produce_unimq_batch(bootstrap: str, n: int, window: int) -> float:
    """``publish_batch`` of all N items in one call (one receipt each once all are durable)."""
    topic = new_topic(bootstrap, "unimq-batch")
    broker = Broker(f"kafka://{bootstrap}", librdkafka_linger_ms=LINGER_MS)
    await broker.connect()
    try:
        await broker.publish(topic, PAYLOAD)  # warm-up
        items = [PAYLOAD] * n
        start = stamp()
        receipts = await broker.publish_batch(topic, items)
        elapsed = stamp() - start
        assert len(receipts) == n
        return elapsed
    finally:
        await broker.stop()


async def produce_raw_asyncio(bootstrap: str, n: int, window: int) -> float:
    """The raw client as an asyncio application would use it: a future per message resolved
    from the delivery report (poll thread + call_soon_threadsafe), windows of gather()."""
    topic = new_topic(bootstrap, "raw-aio")
    producer = raw_producer(bootstrap)
    loop = asyncio.get_running_loop()
    running = True

    def poll() -> None:
        while running:
            producer.poll(0.05)

    poller = loop.run_in_executor(None, poll)

    async def send() -> None:
        future = loop.create_future()

        def report(error: Any, _message: Any) -> None:
            loop.call_soon_threadsafe(
                future.set_exception if error else future.set_result,
                RuntimeError(str(error)) if error else None,
            )

        producer.produce(topic, PAYLOAD, on_delivery=report)
        await future

    try:
        await send()
        start = stamp()
        for base in range(0, n, window):
            await asyncio.gather(*(send() for _ in range(min(window, n - base))))
        return stamp() - start
    finally:
        running = False
        await poller
        producer.flush(10)


async def produce_unimq(bootstrap: str, n: int, window: int) -> float:
    topic = new_topic(bootstrap, "unimq")
    broker = Broker(f"kafka://{bootstrap}", librdkafka_linger_ms=LINGER_MS)
    await broker.connect()
    try:
        await broker.publish(topic, PAYLOAD)  # warm-up
        start = stamp()
        for base in range(0, n, window):
            await asyncio.gather(
                *(broker.publish(topic, PAYLOAD) for _ in range(min(window, n - base)))
            )
        return stamp() - start
    finally:
        await broker.stop()


def faststream_producer(module: str) -> Runner:
    async def run(bootstrap: str, n: int, window: int) -> float:
        kafka = __import__(f"faststream.{module}", fromlist=["KafkaBroker"])
        topic = new_topic(bootstrap, f"fs-{module}")
        broker = kafka.KafkaBroker(
            bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=LINGER_MS,
            log_level=logging.WARNING,
        )
        await broker.start()
        try:
            await broker.publish(PAYLOAD, topic)
            start = stamp()
            for base in range(0, n, window):
                await asyncio.gather(
                    *(broker.publish(PAYLOAD, topic) for _ in range(min(window, n - base)))
                )
            return stamp() - start
        finally:
            await broker.stop()

    return run


# -- consume --------------------------------------------------------------------------------


async def consume_raw(bootstrap: str, n: int, window: int, *, read: bool = False) -> float:
    """The raw consume loop: ``consume()`` batches of 500 and one async commit each. With
    ``read``, it also reads each record's value, key and headers, as anything that looks at
    unimq's envelope (the id and attempt in the headers) must; the plain loop never does."""
    topic = new_topic(bootstrap, "raw-c")
    await asyncio.to_thread(preload, bootstrap, topic, n)

    def run() -> float:
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([topic])
        seen = 0
        start = 0.0
        try:
            while seen < n:
                batch = consumer.consume(num_messages=500, timeout=1.0)
                handled = [m for m in batch if m.error() is None]
                if read:
                    for m in handled:
                        m.value(), m.key(), m.headers()
                if handled and not start:
                    start = stamp()
                seen += len(handled)
                if handled:
                    consumer.commit(asynchronous=True)
            return stamp() - start
        finally:
            consumer.close()

    return await asyncio.to_thread(run)


async def consume_raw_read(bootstrap: str, n: int, window: int) -> float:
    """:func:`consume_raw` reading each record's value, key and headers."""
    return await consume_raw(bootstrap, n, window, read=True)


async def consume_raw_asyncio(bootstrap: str, n: int, window: int) -> float:
    """Raw consumer in a thread, each message passed to an ``async def`` handler on the loop,
    an async commit per batch: the least an asyncio application does per message."""
    topic = new_topic(bootstrap, "raw-aio-c")
    await asyncio.to_thread(preload, bootstrap, topic, n)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen = 0
    start = 0.0

    async def handler(message: Any) -> None:
        nonlocal seen
        seen += 1

    try:
        while seen < n:
            batch = await asyncio.to_thread(consumer.consume, 500, 1.0)
            handled = [m for m in batch if m.error() is None]
            if handled and not start:
                start = stamp()
            for message in handled:
                await handler(message)
            if handled:
                consumer.commit(asynchronous=True)
        return stamp() - start
    finally:
        await asyncio.to_thread(consumer.close)


async def consume_unimq(bootstrap: str, n: int, window: int) -> float:
    topic = new_topic(bootstrap, "unimq-c")
    await asyncio.to_thread(preload, bootstrap, topic, n)
    broker = Broker(f"kafka://{bootstrap}")
    done = asyncio.Event()
    seen = 0
    start = 0.0

    @broker.subscriber(topic, group=f"bench-{uuid.uuid4().hex[:8]}", concurrency=CONCURRENCY)
    async def handle(message: Message) -> None:
        nonlocal seen, start
        if not seen:
            start = stamp()
        seen += 1
        if seen == n:
            done.set()

    async with broker:
        await asyncio.wait_for(done.wait(), 300)
        return stamp() - start


class BatchCounter:
    """The handler of the batch runners: counts what it is given, starts the clock at the first
    batch and sets ``done`` at the N-th message. One call per batch, not per message, so the
    runners share it without changing what they measure."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen = 0
        self.start = 0.0
        self.done = asyncio.Event()

    def add(self, size: int) -> None:
        if not self.seen:
            self.start = stamp()
        self.seen += size
        if self.seen >= self.n:
            self.done.set()

    def handler(self, bodies: bool) -> Callable[..., Awaitable[None]]:
        """A handler of ``list[bytes]`` (``bodies``) or of ``list[Message]``."""

        async def handle(messages: list[Message]) -> None:
            self.add(len(messages))

        async def handle_bodies(items: list[bytes]) -> None:
            self.add(len(items))

        return handle_bodies if bodies else handle


async def consume_unimq_batch(
    bootstrap: str, n: int, window: int, *, bodies: bool = False
) -> float:
    """A batch subscriber: ``BatchPolicy(max_size=BATCH, max_wait=0.05)``, the handler takes
    ``list[Message]`` (``bodies``: ``list[bytes]``, the cheapest batch handler unimq has: no
    Message per record); clock from the first batch to the N-th message acked."""
    topic = new_topic(bootstrap, "unimq-bc")
    await asyncio.to_thread(preload, bootstrap, topic, n)
    broker = Broker(f"kafka://{bootstrap}")
    counter = BatchCounter(n)
    broker.subscriber(
        topic,
        group=f"bench-{uuid.uuid4().hex[:8]}",
        batch=BatchPolicy(max_size=BATCH, max_wait=0.05),
    )(counter.handler(bodies))

    async with broker:
        await asyncio.wait_for(counter.done.wait(), 300)
        await broker.drain(timeout=60)  # the last batch is acked after its handler returned
        return stamp() - counter.start


async def consume_memory(bootstrap: str, n: int, window: int) -> float:
    """unimq's own per-message rate on ``memory://``, same handler and concurrency as the Kafka
    run, N messages queued first: what the core costs without a broker adapter."""
    broker = Broker("memory://")
    done = asyncio.Event()
    seen = 0
    start = 0.0

    @broker.subscriber("bench", group="g", concurrency=CONCURRENCY)
    async def handle(message: Message) -> None:
        nonlocal seen, start
        if not seen:
            start = stamp()
        seen += 1
        if seen == n:
            done.set()

    async with broker:
        for _ in range(n):  # the memory transport's publish never yields: nothing runs yet
            await broker.publish("bench", PAYLOAD)
        await asyncio.wait_for(done.wait(), 300)
        return stamp() - start


async def consume_memory_batch(
    bootstrap: str, n: int, window: int, *, bodies: bool = False
) -> float:
    """The batch subscriber of :func:`consume_unimq_batch` on ``memory://``, N messages queued
    first: what unimq's core costs a batch subscriber without a broker adapter."""
    broker = Broker("memory://")
    counter = BatchCounter(n)
    broker.subscriber("bench", group="g", batch=BatchPolicy(max_size=BATCH, max_wait=0.05))(
        counter.handler(bodies)
    )

    async with broker:
        for _ in range(n):
            await broker.publish("bench", PAYLOAD)
        await asyncio.wait_for(counter.done.wait(), 300)
        await broker.drain(timeout=60)
        return stamp() - counter.start


def faststream_consumer(module: str, cap: int) -> Runner:
    async def run(bootstrap: str, n: int, window: int) -> float:
        n = min(n, cap)  # a commit per message: slow; the rate (msg/s) is what is compared
        kafka = __import__(f"faststream.{module}", fromlist=["KafkaBroker"])
        from faststream import AckPolicy

        topic = new_topic(bootstrap, f"fs-{module}-c")
        await asyncio.to_thread(preload, bootstrap, topic, n)
        broker = kafka.KafkaBroker(bootstrap, logger=None)
        done = asyncio.Event()
        state = {"seen": 0, "start": 0.0}

        @broker.subscriber(  # type: ignore[misc]
            topic,
            group_id=f"bench-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.ACK,
        )
        async def handle(body: bytes) -> None:
            if not state["seen"]:
                state["start"] = stamp()
            state["seen"] += 1
            if state["seen"] == n:
                done.set()

        await broker.start()
        try:
            await asyncio.wait_for(done.wait(), 300)
            return stamp() - state["start"]
        finally:
            await broker.stop()

    return run


# -- driver ---------------------------------------------------------------------------------


def available_faststream() -> list[str]:
    found = []
    for module in ("confluent", "kafka"):
        try:
            __import__(f"faststream.{module}")
            found.append(module)
        except ImportError as exc:
            print(f"  (FastStream {module} skipped: {exc})", file=sys.stderr)
    return found


async def measure(
    label: str,
    runners: dict[str, Runner],
    bootstrap: str,
    n: int,
    window: int,
    repeat: int,
    caps: dict[str, int],
) -> tuple[dict[str, float], dict[str, float]]:
    """Medians of the wall-clock rates and of the CPU rates (messages per CPU second of the
    whole process), per runner."""
    rates: dict[str, list[float]] = {name: [] for name in runners}
    cpu_rates: dict[str, list[float]] = {name: [] for name in runners}
    for round_ in range(repeat):
        for name, runner in runners.items():
            STAMPS.clear()
            COLLECTOR.reset()
            seconds = await runner(bootstrap, n, window)
            cpu = cpu_seconds()
            count = min(n, caps.get(name, n))
            rates[name].append(count / seconds)
            cpu_rates[name].append(count / cpu)
            print(
                f"  {label} round {round_ + 1} {name:34s} {count / seconds:10.0f} msg/s"
                f"  {cpu / count * 1e6:7.2f} CPU us/msg"
                f"  (collector {COLLECTOR.seconds / count * 1e6:5.2f} us/msg,"
                f" {COLLECTOR.full} full)",
                flush=True,
            )
    return (
        {name: statistics.median(values) for name, values in rates.items()},
        {name: statistics.median(values) for name, values in cpu_rates.items()},
    )


def report(label: str, medians: dict[str, float], cpu: dict[str, float]) -> None:
    raw = medians.get("raw confluent-kafka", float("nan"))
    aio = next((v for k, v in medians.items() if k.startswith("raw (")), raw)
    print(
        f"\n{label}: median msg/s, ratio to raw confluent-kafka / to raw used from asyncio;"
        " median CPU us/msg (whole process)"
    )
    for name, rate in medians.items():
        print(
            f"  {name:34s} {rate:10.0f}   {rate / raw:5.2f}x   {rate / aio:5.2f}x"
            f"   {1e6 / cpu[name]:7.2f} us"
        )


def acceptance(
    produce: dict[str, float],
    consume: dict[str, float],
    produce_cpu: dict[str, float],
    consume_cpu: dict[str, float],
) -> None:
    """The ratios issue 14 asks for, from the medians of this run: wall clock (what the issue
    asks), and CPU (messages per CPU second; steadier on a shared machine, reported beside)."""
    lines = [
        (
            "publish_batch / raw produce-all-then-flush",
            "unimq publish_batch",
            "raw produce-all",
            0.7,
        ),
        (
            "publish_batch / raw produce-all + envelope headers",
            "unimq publish_batch",
            "raw produce-all + envelope headers",
            0.7,
        ),
        ("awaited publish / raw awaited from asyncio", "unimq", "raw (asyncio futures)", 1.0),
        ("batch consume / raw consume loop", "unimq batch", "raw confluent-kafka", 0.5),
        (
            "batch consume / raw loop reading value, key, headers",
            "unimq batch",
            READ,
            0.5,
        ),
        (
            "batch consume, list[bytes] / raw consume loop",
            "unimq batch list[bytes]",
            "raw confluent-kafka",
            0.5,
        ),
        ("per-message consume / unimq on memory://", "unimq", "unimq memory://", 0.8),
    ]
    print("\nacceptance ratios (medians of this run): wall clock, then CPU")
    for text, new, base, target in lines:
        producing = text.startswith(("publish", "awaited"))
        medians = produce if producing else consume
        cpu = produce_cpu if producing else consume_cpu
        if new in medians and base in medians:
            ratio = medians[new] / medians[base]
            cpu_ratio = cpu[new] / cpu[base]
            verdict = "ok" if ratio >= target else "BELOW"
            print(
                f"  {text:52s} {ratio:5.2f}x  (target >= {target}x: {verdict})"
                f"   CPU {cpu_ratio:5.2f}x"
            )
    ceilings(produce_cpu, consume_cpu)


def ceilings(produce_cpu: dict[str, float], cpu: dict[str, float]) -> None:
    """The ratios an adapter that cost nothing would reach, from this run's CPU medians:
    ``publish_batch`` sends at least what raw produce-all with the envelope's headers sends;
    a unimq subscriber on Kafka does at least what the raw consume loop reading each
    record's value, key and headers does (the client's fetching and its records; unimq's
    envelope is in the headers) plus what unimq's core does on ``memory://`` for the same
    subscriber, so its CPU per message is at least the sum of the two. The bound is in CPU
    (the wall clock can do a little better where librdkafka's threads run beside the loop on
    another core)."""
    bounds: list[tuple[str, float]] = []
    sent = {name: 1e6 / rate for name, rate in produce_cpu.items()}
    if {"raw produce-all", "raw produce-all + envelope headers"} <= sent.keys():
        # A publish writes the envelope's four headers: raw produce-all sending exactly those
        # is what a free adapter would cost.
        bare, headed = sent["raw produce-all"], sent["raw produce-all + envelope headers"]
        bounds.append(("publish_batch / raw produce-all-then-flush", bare / headed))
    us = {name: 1e6 / rate for name, rate in cpu.items()}
    if {"raw confluent-kafka", "unimq memory://", "unimq memory:// batch"} <= us.keys():
        bounds.extend(consume_ceilings(us))
    if bounds:
        print("\nceilings: the same ratios with an adapter that cost nothing (CPU; see ceilings())")
    for text, bound in bounds:
        print(f"  {text:52s} {bound:5.2f}x")


def consume_ceilings(us: dict[str, float]) -> list[tuple[str, float]]:
    """The consume lines of :func:`ceilings`, from CPU µs per message by runner."""
    raw, core = us["raw confluent-kafka"], us["unimq memory://"]
    core_batch = us["unimq memory:// batch"]
    # What a record costs the client at least: with the fields unimq reads of every record
    # (its envelope is in the headers) where that loop ran.
    read = us.get(READ)
    floor = raw if read is None else read
    bounds = [
        ("per-message consume / unimq on memory://", core / (core + floor)),
        ("batch consume / raw consume loop", raw / (floor + core_batch)),
    ]
    if read is not None:  # (without that runner there is no such line to bound)
        bounds.append(
            ("batch consume / raw loop reading value, key, headers", read / (read + core_batch))
        )
        # With unimq's core free as well: the raw client alone, reading the envelope.
        bounds.append(("any subscriber of the envelope / raw consume loop", raw / read))
    core_bodies = us.get("unimq memory:// batch list[bytes]")
    if core_bodies is not None:
        bounds.append(
            ("batch consume, list[bytes] / raw consume loop", raw / (floor + core_bodies))
        )
    return bounds


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", help="host:port of a running broker")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument(
        "--faststream", action="store_true", help="also run FastStream (slow: minutes more)"
    )
    parser.add_argument(
        "--faststream-consume-messages",
        type=int,
        default=2000,
        help="FastStream commits after every message: consume fewer (the rate is compared)",
    )
    parser.add_argument(
        "--only",
        help="comma-separated runner names to run (e.g. 'raw produce-all,unimq publish_batch')",
    )
    parser.add_argument(
        "--produce-only",
        action="store_true",
        help="run only the produce measurements",
    )
    parser.add_argument(
        "--consume-only",
        action="store_true",
        help="run only the consume measurements (the runner names are shared with produce)",
    )
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() once, after start-up and before the first runner (for raw and unimq "
        "runners alike): full collections then skip the start-up heap",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    handle = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        sys.path.insert(0, str(FIXTURES))
        from unimq_brokers import get_broker

        handle = get_broker("kafka")
        bootstrap = handle.bootstrap_servers
    try:
        faststream = available_faststream() if args.faststream else []
        producers: dict[str, Runner] = {
            "raw confluent-kafka": produce_raw,
            "raw produce-all": produce_raw_all,
            "raw produce-all + envelope headers": produce_raw_all_headers,
            "raw (asyncio futures)": produce_raw_asyncio,
            "unimq": produce_unimq,
            "unimq publish_batch": produce_unimq_batch,
        }
        consumers: dict[str, Runner] = {
            "raw confluent-kafka": consume_raw,
            READ: consume_raw_read,
            "raw (async handler)": consume_raw_asyncio,
            "unimq": consume_unimq,
            "unimq batch": consume_unimq_batch,
            "unimq memory://": consume_memory,
            "unimq memory:// batch": consume_memory_batch,
            "unimq batch list[bytes]": functools.partial(consume_unimq_batch, bodies=True),
            "unimq memory:// batch list[bytes]": functools.partial(
                consume_memory_batch, bodies=True
            ),
        }
        names = {"confluent": "FastStream confluent", "kafka": "FastStream aiokafka"}
        cap = args.faststream_consume_messages
        caps: dict[str, int] = {}
        for module in faststream:
            producers[names[module]] = faststream_producer(module)
            consumers[names[module]] = faststream_consumer(module, cap)
            caps[names[module]] = cap
        n, window, repeat = args.messages, args.window, args.repeat
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
        frozen = ""
        if args.gc_freeze:  # once: objects frozen stay (a runner's left-over clients would too)
            gc.collect()
            gc.freeze()
            frozen = f", gc.freeze() of {gc.get_freeze_count()} start-up objects"
        print(f"{n} messages x {repeat} rounds, window {window}, broker {bootstrap}{frozen}")
        print(f"load average at start: {load} ({os.cpu_count()} CPUs)")
        if args.only:
            wanted = {name.strip() for name in args.only.split(",")}
            producers = {k: v for k, v in producers.items() if k in wanted}
            consumers = {k: v for k, v in consumers.items() if k in wanted}
        if args.consume_only:
            producers = {}
        if args.produce_only:
            consumers = {}
        produce, produce_cpu = await measure("produce", producers, bootstrap, n, window, repeat, {})
        consume, consume_cpu = await measure(
            "consume", consumers, bootstrap, n, window, repeat, caps
        )
        if produce:
            report("durable produce", produce, produce_cpu)
        if consume:
            report("end-to-end consume (handler + commit)", consume, consume_cpu)
        acceptance(produce, consume, produce_cpu, consume_cpu)
        print(f"load average at end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if handle is not None:
            handle.remove()


if __name__ == "__main__":
    asyncio.run(main())
