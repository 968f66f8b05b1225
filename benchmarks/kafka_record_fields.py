"""What unimq's envelope costs confluent-kafka itself, per record, before unimq runs any code.

unimq's envelope (``unimq-id``, ``unimq-attempt``, ``unimq-content-type``, and
``unimq-published-at``: DESIGN.md §3, docs/semantics.md) travels in each record's headers, so
every unimq publish writes them and every unimq subscriber reads ``headers()`` of every record.
Three tables, all the raw client alone:

- **reading, field by field**: each accessor of ``confluent_kafka.Message`` per record, on
  records consumed from a real broker with the four headers (``consume()``'s own objects, each
  read on a fresh set: confluent-kafka converts a record's headers to Python on their first
  read only), with the garbage collector on (as in every application; all N records are kept,
  as a read-ahead and a batch keep theirs) and off (the read itself);
- **reading, by number of headers**: value, key and headers of records carrying 0, 1 (the id
  alone) or 4 envelope headers;
- **writing, by number of headers**: process CPU per record of produce-all-then-flush (durable,
  a delivery report per record, as ``kafka_throughput.py``'s raw runners) with 0, 1, 2 or 4 of
  the envelope's headers.

It backs the ceilings of ``kafka_throughput.py``: what the contract costs any client of it, and
what it would still cost if the envelope were cut to the id alone.

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

import uuid_utils

sys.path.insert(0, str(Path(__file__).parent))
from kafka_loop_side import consumed
from kafka_throughput import (
    PAYLOAD,
    error_reports,
    new_topic,
    preload,
    raw_producer,
    warmed_up,
)

from unimq.headers import ATTEMPT, BINARY, CONTENT_TYPE, ID, PUBLISHED_AT

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
READ_ALL = READS["value(), key(), headers()"]


def envelope(count: int, stamp: str) -> dict[str, str]:
    """The first ``count`` of the four headers of a plain publish (the id first), the id a
    placeholder: each record gets its own in a copy (as unimq's ``publish_batch`` does), so
    what is timed per record is one ``dict`` copy and one id, whatever ``count`` is."""
    values = {ID: "", ATTEMPT: "1", CONTENT_TYPE: BINARY, PUBLISHED_AT: stamp}
    return dict(list(values.items())[:count])


def read_cost(source: str, n: int, read: Read, collector: bool) -> float:
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


def produce(bootstrap: str, n: int, count: int) -> tuple[str, float]:
    """N records with ``count`` envelope headers, produced all then flushed: the topic and the
    process CPU µs per record."""
    topic = new_topic(bootstrap, f"fields-{count}h")
    producer = warmed_up(raw_producer(bootstrap), topic)
    errors, report = error_reports()
    template = envelope(count, str(int(time.time() * 1000)))
    uuid7 = uuid_utils.uuid7
    start = time.process_time()
    for i in range(n):
        key = str(i % 100).encode()
        if count:
            headers = template.copy()
            headers[ID] = str(uuid7())
            producer.produce(topic, PAYLOAD, key=key, headers=headers, on_delivery=report)
        else:
            producer.produce(topic, PAYLOAD, key=key, on_delivery=report)
    producer.flush(60)
    cpu = time.process_time() - start
    if errors:
        raise SystemExit(f"{len(errors)} records were not produced: {errors[0]}")
    return topic, cpu / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True, help="host:port of a running broker")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n, repeat, bootstrap = args.messages, args.repeat, args.bootstrap

    topic = new_topic(bootstrap, "fields")
    preload(bootstrap, topic, n)
    source = f"{bootstrap}/{topic}"
    print(
        f"reading {n} records with the envelope's four headers: ns per record, median of {repeat}"
    )
    print(f"  {'read':34s} {'collector on':>13s} {'collector off':>14s}")
    for name, read in READS.items():
        on = [read_cost(source, n, read, True) for _ in range(repeat)]
        off = [read_cost(source, n, read, False) for _ in range(repeat)]
        print(f"  {name:34s} {statistics.median(on):13.0f} {statistics.median(off):14.0f}")

    print(f"\nwriting and reading by number of envelope headers, median of {repeat}")
    print(
        f"  {'headers':8s} {'produce CPU us/record':>22s}"
        f" {'value+key+headers ns, collector on':>36s} {'off':>6s}"
    )
    for count in (0, 1, 2, 4):
        runs = [produce(bootstrap, n, count) for _ in range(repeat)]
        cpu = statistics.median(cost for _, cost in runs)
        source = f"{bootstrap}/{runs[0][0]}"
        on = [read_cost(source, n, READ_ALL, True) for _ in range(repeat)]
        off = [read_cost(source, n, READ_ALL, False) for _ in range(repeat)]
        print(
            f"  {count:<8d} {cpu:22.2f} {statistics.median(on):36.0f} {statistics.median(off):6.0f}"
        )


if __name__ == "__main__":
    main()
