"""End-to-end in-memory throughput: publish -> handler -> ack, 100-byte messages.

Side by side, in one run, in one process:

1. unimq      ``Broker("memory://")``, one subscriber, ``await broker.publish(...)``;
2. kombu      ``kombu.Connection("memory://")``, ``Producer.publish`` + ``Consumer`` callback
              that acks, ``connection.drain_events()``;
3. FastStream ``TestRabbitBroker(RabbitBroker())``, the in-memory test client of
              ``faststream[rabbit]``, ``await br.publish(...)``.

Every measurement starts the clock right before the first publish and stops it once the
handler has seen (and acked) all N messages. After a short warm-up of each library the runs
are interleaved (unimq, kombu, FastStream, unimq, ...) and the median msg/s of each is reported,
with the ratios unimq/kombu and unimq/FastStream. Figures are reported, never asserted.

Run:  python benchmarks/memory_throughput.py [--messages N] [--repeat 3]
                                            [--faststream-messages 5000] [--json]
Needs: pip install 'unimq[benchmarks]'   (kombu, faststream[rabbit]); a missing one is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

# Module level, not inside run_unimq: with ``from __future__ import annotations`` unimq resolves
# the handler's ``Message`` annotation in this module's globals.
from unimq import Broker, Message

PAYLOAD_SIZE = 100
PAYLOAD = bytes(range(PAYLOAD_SIZE))  # 100 bytes, published as bytes (no serialization)
INSTALL_HINT = "pip install 'unimq[benchmarks]'"
EXTRAS = "extras: kombu, faststream[rabbit]"
WAIT_TIMEOUT = 120.0  # seconds without progress before a run is declared stuck

Runner = Callable[[int], Awaitable[float]]  # messages -> elapsed seconds


# -- 1. unimq ---------------------------------------------------------------------------------


async def run_unimq(n: int) -> float:
    broker = Broker("memory://")  # private to this Broker: a fresh hub for every run
    done = asyncio.Event()
    seen = 0

    @broker.subscriber("bench", group="g")
    async def handle(message: Message) -> None:
        nonlocal seen
        seen += 1
        if seen == n:
            done.set()

    async with broker:
        start = time.perf_counter()
        for _ in range(n):
            await broker.publish("bench", PAYLOAD)
        await asyncio.wait_for(done.wait(), WAIT_TIMEOUT)
        # The handler returned and the pipeline acked before this task could resume: the
        # memory transport does not yield between a handler's return and its ack.
        elapsed = time.perf_counter() - start
        await broker.drain(timeout=WAIT_TIMEOUT)  # nothing left in flight (not timed)
    if seen != n:
        raise RuntimeError(f"unimq: handler saw {seen} messages, expected {n}")
    return elapsed


UNIMQ_HOW = (
    'Broker("memory://"), one subscriber (group "g", default concurrency 16), async handler '
    "(message: Message) that counts; auto-ack on return; bytes body, no serialization"
)


# -- 2. kombu ---------------------------------------------------------------------------------

_kombu_runs = 0


async def run_kombu(n: int) -> float:
    # kombu's API is synchronous: it runs right here, on the event loop's thread, while
    # nothing else is scheduled on the loop.
    import kombu

    global _kombu_runs
    _kombu_runs += 1
    name = f"bench-{os.getpid()}-{_kombu_runs}"  # kombu's memory state is process-global
    exchange = kombu.Exchange(name, type="direct", durable=False)
    queue = kombu.Queue(name, exchange, routing_key=name, durable=False)
    seen = 0

    def on_message(body: Any, message: Any) -> None:
        nonlocal seen
        message.ack()
        seen += 1

    with kombu.Connection("memory://") as connection:
        consumer_channel = connection.channel()
        producer_channel = connection.channel()
        try:
            producer = kombu.Producer(producer_channel, exchange=exchange, routing_key=name)
            queue(producer_channel).declare()
            consumer = kombu.Consumer(
                consumer_channel,
                queues=[queue],
                callbacks=[on_message],
                accept=["application/octet-stream"],
            )
            with consumer:
                start = time.perf_counter()
                for _ in range(n):
                    # content_type + content_encoding given: kombu runs no serializer at all.
                    producer.publish(
                        PAYLOAD,
                        content_type="application/octet-stream",
                        content_encoding="binary",
                    )
                while seen < n:
                    connection.drain_events(timeout=WAIT_TIMEOUT)
                elapsed = time.perf_counter() - start
        finally:
            producer_channel.close()
            consumer_channel.close()
    if seen != n:
        raise RuntimeError(f"kombu: callback saw {seen} messages, expected {n}")
    return elapsed


KOMBU_HOW = (
    'Connection("memory://"), direct Exchange + Queue, Producer.publish(body, '
    "content_type='application/octet-stream', content_encoding='binary') so no serializer "
    "runs, Consumer callback that calls message.ack() and counts, "
    "connection.drain_events(timeout=...) until all N are acked (synchronous API; kombu's "
    "virtual transport base64-encodes bodies in its queue by default)"
)


# -- 3. FastStream ----------------------------------------------------------------------------


async def run_faststream(n: int) -> float:
    from faststream.rabbit import RabbitBroker, TestRabbitBroker

    broker = RabbitBroker()
    seen = 0

    @broker.subscriber("bench")
    async def handle(body: bytes) -> None:
        nonlocal seen
        seen += 1

    async with TestRabbitBroker(broker) as test_broker:
        start = time.perf_counter()
        for _ in range(n):
            await test_broker.publish(PAYLOAD, "bench")  # runs the handler before returning
        elapsed = time.perf_counter() - start
    if seen != n:
        raise RuntimeError(f"FastStream: handler saw {seen} messages, expected {n}")
    return elapsed


FASTSTREAM_HOW = (
    'TestRabbitBroker(RabbitBroker()), one subscriber on queue "bench", async handler '
    "(body: bytes) that counts; await test_broker.publish(payload, 'bench') delivers inline. "
    "FastStream ships no in-memory broker; this is its in-memory test client (it builds "
    "unittest.mock objects for every message), not its aio-pika production path"
)


# -- measuring --------------------------------------------------------------------------------


@dataclass
class Contender:
    key: str
    label: str
    dist: str  # the distribution to install (and whose version is shown)
    module: str
    runner: Runner
    messages: int
    how: str
    version: str = ""
    skipped: str | None = None
    seconds: list[float] = field(default_factory=list)

    @property
    def rates(self) -> list[float]:
        return [self.messages / s for s in self.seconds]

    @property
    def median(self) -> float | None:
        return statistics.median(self.rates) if self.seconds else None


def _available(contender: Contender) -> None:
    try:
        __import__(contender.module)
    except ImportError as exc:
        contender.skipped = (
            f"{contender.dist} is not installed ({exc}): skipping the {contender.label} column; "
            f"{INSTALL_HINT} ({EXTRAS}) to include it"
        )
        return
    try:
        contender.version = importlib.metadata.version(contender.dist)
    except importlib.metadata.PackageNotFoundError:
        contender.version = "?"


async def _measure(contender: Contender, messages: int) -> float:
    gc.collect()  # garbage from the previous run is not charged to this one
    return await contender.runner(messages)


async def benchmark(contenders: list[Contender], repeat: int, log: Callable[[str], None]) -> None:
    active = [c for c in contenders if c.skipped is None]
    for contender in active:  # warm-up: imports, code paths, allocator
        warm = max(100, min(contender.messages // 10, 10_000))
        log(f"warm-up  {contender.label}: {warm:,} messages")
        await _measure(contender, warm)
    for index in range(1, repeat + 1):
        for contender in active:
            seconds = await _measure(contender, contender.messages)
            contender.seconds.append(seconds)
            log(
                f"run {index}/{repeat}  {contender.label}: {contender.messages:,} messages in "
                f"{seconds:.3f}s = {contender.messages / seconds:,.0f} msg/s"
            )


def _ratio(a: Contender, b: Contender) -> float | None:
    if a.median is None or b.median is None:
        return None
    return a.median / b.median


def environment() -> dict[str, Any]:
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpus": os.cpu_count(),
        "load_average": _load_average(),
    }


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # not on every platform
        return None


def report_text(contenders: list[Contender], repeat: int, env: dict[str, Any]) -> str:
    unimq, kombu, faststream = contenders
    averages = env["load_average"]
    load = " / ".join(f"{x:.2f}" for x in averages) if averages else "n/a"
    busy = bool(averages and env["cpus"] and averages[0] > 0.5 * env["cpus"])
    lines = [
        "",
        f"In-memory end-to-end throughput: publish -> handler -> ack, {PAYLOAD_SIZE}-byte messages",
        f"Python:  {env['python']}",
        f"Machine: {env['platform']} ({env['machine']}, {env['cpus']} CPUs)",
        f"Load average at start (1/5/15 min): {load}"
        + ("  <- other work on this machine: expect noise" if busy else ""),
        "One process, one thread, one asyncio event loop: the libraries run one after another,",
        "never at the same time (kombu's synchronous API runs on the loop's thread while nothing",
        "else is scheduled). Clock: first publish -> handler has seen and acked all N.",
        f"Warm-up run per library, then {repeat} measured runs, interleaved; median reported.",
        "",
    ]
    header = (
        f"{'library':<34} {'messages':>9}  "
        + "  ".join(f"{'run ' + str(i + 1):>9}" for i in range(repeat))
        + f"  {'median msg/s':>12}"
    )
    lines += [header, "-" * len(header)]
    for c in contenders:
        name = f"{c.label} {c.version}".strip()
        if c.skipped is not None:
            lines.append(f"{name:<34} {'-':>9}  skipped (not installed)")
            continue
        runs = "  ".join(f"{rate:>9,.0f}" for rate in c.rates)
        lines.append(f"{name:<34} {c.messages:>9,}  {runs}  {c.median:>12,.0f}")
    lines.append("")
    for other, note in (
        (kombu, "(acceptance target >= 3x; reported, not asserted)"),
        (faststream, f"(FastStream measured with {faststream.messages:,} messages)"),
    ):
        ratio = _ratio(unimq, other)
        text = f"{ratio:,.2f}x  {note}" if ratio is not None else f"n/a ({other.label} skipped)"
        lines.append(f"unimq / {other.label.split()[0]:<11} {text}")
    lines += ["", "What each column does:"]
    for c in contenders:
        text = f"{c.label}: {c.how}."
        lines += textwrap.wrap(text, 92, initial_indent="- ", subsequent_indent="  ")
    for c in contenders:
        if c.skipped is not None:
            lines.append(f"NOTE: {c.skipped}")
    return "\n".join(lines)


def report_json(contenders: list[Contender], repeat: int, env: dict[str, Any]) -> str:
    unimq, kombu, faststream = contenders
    return json.dumps(
        {
            "benchmark": "memory_throughput",
            "measures": "first publish -> handler has seen and acked all N, in one process",
            "payload_bytes": PAYLOAD_SIZE,
            "repeat": repeat,
            "environment": env,
            "results": {
                c.key: {
                    "label": c.label,
                    "version": c.version or None,
                    "messages": c.messages,
                    "skipped": c.skipped,
                    "seconds": c.seconds,
                    "msg_per_s": c.rates,
                    "median_msg_per_s": c.median,
                    "how": c.how,
                }
                for c in contenders
            },
            "ratios": {
                "unimq_over_kombu": _ratio(unimq, kombu),
                "unimq_over_faststream": _ratio(unimq, faststream),
            },
        },
        indent=2,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--messages", type=int, default=100_000, help="messages per run for unimq and kombu"
    )
    parser.add_argument("--repeat", type=int, default=3, help="measured runs per library")
    parser.add_argument(
        "--faststream-messages",
        type=int,
        default=5_000,
        help="messages per run for FastStream's (much slower) TestRabbitBroker",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON only")
    args = parser.parse_args(argv)
    for name in ("messages", "repeat", "faststream_messages"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    contenders = [
        Contender(
            "unimq", "unimq memory://", "unimq", "unimq", run_unimq, args.messages, UNIMQ_HOW
        ),
        Contender(
            "kombu", "kombu memory://", "kombu", "kombu", run_kombu, args.messages, KOMBU_HOW
        ),
        Contender(
            "faststream",
            "FastStream TestRabbitBroker",
            "faststream",
            "faststream.rabbit",
            run_faststream,
            args.faststream_messages,
            FASTSTREAM_HOW,
        ),
    ]
    for contender in contenders:
        _available(contender)

    # Progress goes to stderr, so --json keeps stdout machine-readable.
    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    for contender in contenders:
        if contender.skipped is not None:
            log(contender.skipped)
    env = environment()
    asyncio.run(benchmark(contenders, args.repeat, log))
    report = report_json if args.json else report_text
    print(report(contenders, args.repeat, env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
