"""Log shipping with unimq: a large log file through any backend into SQLite, in batches.

The shipper reads the file and publishes it with ``broker.publish_batch`` (one call per
``--batch`` lines: the backend's own batching, one wait for all confirms). A batch subscriber
(``batch=unimq.BatchPolicy``) gets up to ``--batch`` lines per call and writes them to SQLite in
one transaction (a plain ``def``: unimq runs it in a worker thread, off the event loop). The
row id is the message id, inserted with ``INSERT OR IGNORE``, so a redelivered batch
(at-least-once) never stores a line twice.

Run it (generates the log file first if it is absent)::

    python -m examples.logs                               # memory://logs, 500,000 lines
    python -m examples.logs --lines 2000000 --batch 1000
    UNIMQ_URL=kafka://127.0.0.1:9092 python -m examples.logs

A progress line on stderr, then a final rate line on stdout; the exit status is 0 when SQLite
holds exactly the file's lines.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import unimq
from unimq import Broker, Message

TOPIC = "logs.app"
GROUP = "sqlite-writer"
DEFAULT_FILE = Path(tempfile.gettempdir()) / "unimq-example-app.log"
DEFAULT_DB = Path(tempfile.gettempdir()) / "unimq-example-logs.sqlite"

# -- the log file -------------------------------------------------------------------------------

_SERVICES = ("api", "billing", "search", "auth", "worker")
_LEVELS = ("INFO",) * 16 + ("DEBUG",) * 6 + ("WARN",) * 2 + ("ERROR",)
_PATHS = ("/orders", "/orders/{n}", "/search?q=item-{n}", "/login", "/cart/{n}/items")


def generate(path: Path, lines: int, seed: int = 14) -> None:
    """Write ``lines`` lines of a plausible application log (deterministic for a ``seed``)."""
    rng = random.Random(seed)
    start = 1_796_083_200.0  # 2026-12-01T00:00:00Z
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        for n in range(lines):
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start + n * 0.01))
            millis = n % 100 * 10
            service = rng.choice(_SERVICES)
            level = rng.choice(_LEVELS)
            route = rng.choice(_PATHS).format(n=rng.randrange(100_000))
            status = 500 if level == "ERROR" else rng.choice((200, 200, 200, 201, 204, 404))
            request = uuid.UUID(int=rng.getrandbits(128))
            out.write(
                f"{ts}.{millis:03d}Z {level} service={service} request={request} method=GET"
                f" path={route} status={status} latency_ms={rng.randrange(1, 900)}\n"
            )


def batches(path: Path, size: int) -> Iterator[list[str]]:
    """The file's lines (without their newline), ``size`` at a time."""
    with open(path, encoding="utf-8") as lines:
        batch: list[str] = []
        for line in lines:
            batch.append(line.rstrip("\n"))
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch


def count_lines(path: Path) -> int:
    with open(path, "rb") as lines:
        return sum(1 for _ in lines)


# -- SQLite -------------------------------------------------------------------------------------


class LogTable:
    """The ``logs`` table; written by the subscriber's worker thread, counted by the shipper."""

    def __init__(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self.connection = sqlite3.connect(path, check_same_thread=False)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("PRAGMA synchronous=NORMAL")
        self.connection.execute(
            "CREATE TABLE logs (id TEXT PRIMARY KEY, run TEXT, ts TEXT, level TEXT, "
            "service TEXT, line TEXT)"
        )
        self._lock = threading.Lock()
        self.stored = 0  # lines written by this run (read by the progress line)

    def write(self, run: str, messages: list[Message]) -> None:
        rows = []
        for message in messages:
            line = message.body.decode("utf-8")
            ts, level, service, _ = [*line.split(" ", 3), "", "", ""][:4]
            rows.append((message.id, run, ts, level, service.removeprefix("service="), line))
        with self._lock, self.connection:  # one transaction per batch
            before = self.connection.total_changes
            self.connection.executemany(
                "INSERT OR IGNORE INTO logs VALUES (?, ?, ?, ?, ?, ?)", rows
            )
            self.stored += self.connection.total_changes - before

    def count(self, run: str) -> int:
        with self._lock:
            (rows,) = self.connection.execute(
                "SELECT count(*) FROM logs WHERE run = ?", (run,)
            ).fetchone()
        return int(rows)

    def close(self) -> None:
        self.connection.close()


# -- progress -----------------------------------------------------------------------------------


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, one line per 10% otherwise."""

    def __init__(self, total: int, out: TextIO = sys.stderr) -> None:
        self.total = total
        self.out = out
        self.tty = out.isatty()
        self.started = time.perf_counter()
        self._last_tenth = -1

    def show(self, shipped: int, stored: int) -> None:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        done = stored / self.total if self.total else 1.0
        if self.tty:
            bar = "#" * int(done * 30)
            self.out.write(
                f"\r[{bar:<30}] {done:6.1%}  shipped {shipped:,}  stored {stored:,}/{self.total:,}"
                f"  {stored / elapsed:,.0f} lines/s "
            )
            self.out.flush()
        elif int(done * 10) > self._last_tenth:
            self._last_tenth = int(done * 10)
            self.out.write(
                f"{done:6.1%}  shipped {shipped:,}  stored {stored:,}/{self.total:,}  "
                f"{stored / elapsed:,.0f} lines/s\n"
            )

    def close(self) -> None:
        if self.tty:
            self.out.write("\n")
        self.out.flush()


# -- the pipeline -------------------------------------------------------------------------------


async def ship(
    url: str, file: Path, db: Path, batch: int, timeout: float, progress_out: TextIO
) -> tuple[int, int, float]:
    """Ship ``file`` into ``db``; returns (lines in the file, rows stored, seconds)."""
    run = uuid.uuid4().hex[:12]  # rows of this run (a real broker may hold earlier runs' lines)
    table = LogTable(db)
    broker = Broker(url)

    @broker.subscriber(
        TOPIC,
        group=GROUP,
        batch=unimq.BatchPolicy(max_size=batch, max_wait=0.05),
        concurrency=1,  # SQLite has one writer
    )
    def store(messages: list[Message]) -> None:
        if messages[0].headers.get("run") == run:
            table.write(run, [m for m in messages if m.headers.get("run") == run])

    total = await asyncio.to_thread(count_lines, file)
    progress = Progress(total, progress_out)
    shipped = 0
    ahead = 50 * batch  # published but not yet stored: bounds what waits in memory
    started = time.perf_counter()
    try:
        async with broker:
            for lines in batches(file, batch):
                # table.stored grows in the handler's worker thread: poll it
                while shipped - table.stored > ahead:  # noqa: ASYNC110
                    await asyncio.sleep(0.005)
                await broker.publish_batch(TOPIC, lines, headers={"run": run})
                shipped += len(lines)
                progress.show(shipped, table.stored)
            deadline = time.monotonic() + timeout
            while table.stored < total and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                progress.show(shipped, table.stored)
            elapsed = time.perf_counter() - started
            progress.show(shipped, table.stored)
    finally:
        progress.close()
    stored = table.count(run)
    table.close()
    return total, stored, elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.logs", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--file", type=Path, default=DEFAULT_FILE, help="the log file (generated if absent)"
    )
    parser.add_argument(
        "--lines", type=int, default=500_000, help="lines to generate when the file is absent"
    )
    parser.add_argument(
        "--db", type=Path, default=DEFAULT_DB, help="the SQLite database (recreated)"
    )
    parser.add_argument(
        "--batch", type=int, default=500, help="lines per publish_batch and per handler call"
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for the last rows"
    )
    args = parser.parse_args(argv)
    url = os.environ.get("UNIMQ_URL", "memory://logs")
    if not args.file.exists():
        print(f"generating {args.lines:,} log lines in {args.file} ...", file=sys.stderr)
        generate(args.file, args.lines)
    size = args.file.stat().st_size
    total, stored, elapsed = asyncio.run(
        ship(url, args.file, args.db, args.batch, args.timeout, sys.stderr)
    )
    shown = Broker(url).url.redacted()
    print(
        f"shipped {total:,} lines ({size / 1e6:.1f} MB) through {shown} into {args.db} in "
        f"{elapsed:.2f}s: {stored / elapsed:,.0f} lines/s, {size / 1e6 / elapsed:.1f} MB/s; "
        f"SQLite rows: {stored:,}"
    )
    if stored != total:
        print(f"MISSING: {total - stored:,} lines did not reach SQLite", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
