"""What reading one consumed Kafka record costs in confluent-kafka, field by field.

unimq's envelope (id, attempt, content type, published-at: DESIGN.md §3) travels in each
record's headers, so every unimq subscriber reads ``headers()`` of every record, as well as
its value and key. This prints what each of those reads costs per record on records consumed
from a real broker (``consume()``'s own objects, each read on a fresh set: confluent-kafka
converts a record's headers to Python on their first read only), with the garbage collector
on (as in every application) and off (what the read itself costs; the rest is the
collections its allocations bring on).

It backs the ceilings of ``kafka_throughput.py``: the per-record work the contract requires
of any subscriber, before unimq runs a line of its own code.

Run:  python benchmarks/kafka_record_fields.py --bootstrap host:port [--messages 20000]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from kafka_loop_side import consumed
from kafka_throughput import new_topic, preload

Read = Callable[[list[Any]], object]

READS: dict[str, Read] = {
    "value()": lambda records: [r.value() for r in records],
    "key()": lambda records: [r.key() for r in records],
    "topic(), partition(), offset()": lambda records: [
        (r.topic(), r.partition(), r.offset()) for r in records
    ],
    "timestamp()": lambda records: [r.timestamp() for r in records],
    "headers(), first read": lambda records: [r.headers() for r in records],
    "value(), key(), headers()": lambda records: [
        (r.value(), r.key(), r.headers()) for r in records
    ],
}


def cost(source: str, n: int, read: Read, collector: bool) -> float:
    """ns per record of ``read`` over N freshly consumed records."""
    bootstrap, topic = source.rsplit("/", 1)
    records = consumed(bootstrap, topic, n)
    if len(records) < n:
        raise SystemExit(f"only {len(records)} of {n} records could be read back")
    gc.collect()
    if not collector:
        gc.disable()
    try:
        start = time.perf_counter()
        read(records)
        return (time.perf_counter() - start) / n * 1e9
    finally:
        gc.enable()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True, help="host:port of a running broker")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    topic = new_topic(args.bootstrap, "fields")
    preload(args.bootstrap, topic, args.messages)
    source = f"{args.bootstrap}/{topic}"
    print(
        f"{args.messages} records with unimq's four headers; ns per record, median of {args.repeat}"
    )
    print(f"  {'read':34s} {'collector on':>13s} {'collector off':>14s}")
    for name, read in READS.items():
        on = [cost(source, args.messages, read, True) for _ in range(args.repeat)]
        off = [cost(source, args.messages, read, False) for _ in range(args.repeat)]
        print(f"  {name:34s} {statistics.median(on):13.0f} {statistics.median(off):14.0f}")


if __name__ == "__main__":
    main()
