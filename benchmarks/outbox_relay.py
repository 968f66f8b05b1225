"""Transactional outbox relay on PostgreSQL into ``memory://`` (issue 13's targets).

1. Throughput: a backlog of N committed outbox rows (100-byte JSON bodies, 16 keys), then a
   ``Broker("memory://", outbox=SQLOutbox(...))`` with one subscriber; the clock runs from the
   relay's start until the handler has seen all N. Reported as rows/s (target >= 5,000).
2. Latency at idle: the relay waits with ``poll_interval=30`` s, so only LISTEN/NOTIFY can
   wake it; M single-row transactions commit one after another, 20 ms apart; for each, the
   time from the commit's start to the handler's start. Reported as p50/p95/max
   (target: p50 <= 50 ms).

Figures are printed, never asserted.

Run:  python benchmarks/outbox_relay.py [--db postgresql://...] [--rows 20000]
                                        [--latency-samples 200] [--json]
Without --db (or UNIMQ_BENCH_PG) a throwaway PostgreSQL server is started from the local
installation (scripts/install-stores.sh), as the contrib tests do.
Needs: pip install -e '.[sql]'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from unimq_sql import SQLOutbox

from unimq import Broker, Message


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def fill(engine: Any, outbox: SQLOutbox, rows: int) -> None:
    body = {"order": "x" * 80}
    per_transaction = 500
    for start in range(0, rows, per_transaction):
        async with AsyncSession(engine) as session, session.begin():
            for n in range(start, min(rows, start + per_transaction)):
                await outbox.publish(session, "bench.orders", body, key=f"k{n % 16}")


async def throughput(db_url: str, rows: int) -> float:
    engine = create_async_engine(db_url, pool_size=5)
    table = f"bench_outbox_{uuid.uuid4().hex[:8]}"
    outbox = SQLOutbox(engine, table=table, retention=3600)
    await outbox.create_table()
    log(f"writing a backlog of {rows} rows ...")
    await fill(engine, outbox, rows)
    broker = Broker(f"memory://bench-{table}", outbox=outbox)
    seen = 0
    done = asyncio.Event()

    @broker.subscriber("bench.orders", group="bench", concurrency=64)
    async def handle(body: dict[str, str]) -> None:
        nonlocal seen
        seen += 1
        if seen == rows:
            done.set()

    start = time.perf_counter()
    await broker.start()  # connects, which starts the relay
    await asyncio.wait_for(done.wait(), 600)
    elapsed = time.perf_counter() - start
    await broker.stop()
    async with engine.begin() as conn:
        await conn.run_sync(outbox.table.drop)
    await engine.dispose()
    return rows / elapsed


async def latency(db_url: str, samples: int) -> list[float]:
    engine = create_async_engine(db_url, pool_size=5)
    table = f"bench_outbox_{uuid.uuid4().hex[:8]}"
    outbox = SQLOutbox(engine, table=table, poll_interval=30.0)
    await outbox.create_table()
    broker = Broker(f"memory://bench-{table}", outbox=outbox)
    committed: dict[str, float] = {}
    delays: list[float] = []
    finished = asyncio.Event()

    @broker.subscriber("bench.latency", group="bench")
    async def handle(body: int, message: Message) -> None:
        delays.append(time.perf_counter() - committed[message.id])
        if len(delays) == samples:
            finished.set()

    async with broker:
        await asyncio.sleep(1.0)  # the relay has polled once and now sleeps for 30 s
        for n in range(samples):
            message_id = str(uuid.uuid4())
            async with AsyncSession(engine) as session, session.begin():
                await outbox.publish(session, "bench.latency", n, message_id=message_id)
                # Taken as the commit starts (the handler may run before it returns): the
                # figure includes the commit itself.
                committed[message_id] = time.perf_counter()
            await asyncio.sleep(0.02)
        await asyncio.wait_for(finished.wait(), 60)
    async with engine.begin() as conn:
        await conn.run_sync(outbox.table.drop)
    await engine.dispose()
    return delays


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default=os.environ.get("UNIMQ_BENCH_PG"), help="PostgreSQL URL")
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    server = None
    db_url = args.db
    if not db_url:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "contrib"))
        from servers import PostgresServer  # type: ignore[import-not-found]

        log("starting a throwaway PostgreSQL server ...")
        server = PostgresServer.start()
        db_url = server.async_url
    try:
        rate = asyncio.run(throughput(db_url, args.rows))
        delays = asyncio.run(latency(db_url, args.latency_samples))
    finally:
        if server is not None:
            server.stop()
    result = {
        "rows": args.rows,
        "rows_per_second": round(rate),
        "latency_samples": len(delays),
        "latency_p50_ms": round(statistics.median(delays) * 1000, 2),
        "latency_p95_ms": round(percentile(delays, 0.95) * 1000, 2),
        "latency_max_ms": round(max(delays) * 1000, 2),
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"outbox relay, PostgreSQL -> memory://: {result['rows_per_second']} rows/s "
            f"(backlog of {args.rows}; target >= 5000)\n"
            f"commit -> handler at idle (LISTEN/NOTIFY, poll 30 s): p50 "
            f"{result['latency_p50_ms']} ms, p95 {result['latency_p95_ms']} ms, max "
            f"{result['latency_max_ms']} ms over {len(delays)} commits (target p50 <= 50 ms)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
