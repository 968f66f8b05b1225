"""Acceptance of issue 14's shared rate limit on a real broker: two OS processes consuming one
RabbitMQ queue under ``RateLimit(200, shared="redis://...")`` start 200 handlers a second
*together* (within 5 %) over 30 s. Two separate budgets would give 400/s; no limit, thousands.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from unimq import Broker

pytestmark = [pytest.mark.realbroker, pytest.mark.timeout(180)]
WORKER = Path(__file__).with_name("rate_worker.py")
RATE = 200.0
WINDOW = 30.0
SETTLE = 2.0  # after the first start: the burst is spent and both processes are consuming


async def test_two_processes_share_a_redis_budget_of_200_per_second(
    rabbitmq_broker: Any, redis_server: Any, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    topic, group = f"rate.{suffix}", "db-writer"
    redis_url = f"{redis_server.url}?key=rate-acceptance-{suffix}"
    outputs = [tmp_path / "worker-a.txt", tmp_path / "worker-b.txt"]
    args = [rabbitmq_broker.url, topic, group, redis_url, str(RATE)]
    workers = _start_workers([[*args, str(out)] for out in outputs])
    try:
        # The backlog outlasts the window: 200/s for the window, while publishing (the workers
        # consume meanwhile) and a margin; the last assertion checks that it did.
        backlog = int(RATE * (WINDOW + 20))
        async with Broker(rabbitmq_broker.url) as producer:
            for start in range(0, backlog, 1000):
                await producer.publish_batch(topic, [b"x"] * min(1000, backlog - start))
        published = time.time()
        first = await _first_start(outputs, deadline=time.monotonic() + 30)
        # From when both processes run and the whole backlog is on the broker.
        begin = max(first + SETTLE, published + 1.0)
        end = begin + WINDOW
        await asyncio.sleep(max(0.0, end + 1.0 - time.time()))
    finally:
        for worker in workers:
            worker.kill()
            worker.wait(10)
    starts = [_starts(out) for out in outputs]
    counts = [sum(begin <= t < end for t in per_process) for per_process in starts]
    total = sum(counts)
    rate = total / WINDOW
    print(f"shared budget {RATE:g}/s: measured {rate:.1f}/s over {WINDOW:g}s, per process {counts}")
    waits = [row[1] for out in outputs for row in _rows(out, ".waits") if begin <= row[0] < end]
    waited = sum(w > 0 for w in waits) / max(1, len(waits))
    lags = [row for out in outputs for row in _rows(out, ".lag") if begin <= row[0] < end]
    late = sum(row[1] for row in lags) / max(1, len(lags))
    cpu = sum(_cpu_used(_rows(out, ".lag"), begin, end) for out in outputs)
    assert abs(rate - RATE) <= 0.05 * RATE, (
        f"combined rate {rate:.1f}/s over {WINDOW:g}s (per process {counts}), "
        f"expected {RATE:g}/s +- 5%; {len(waits)} admissions, {waited:.0%} of them waited for "
        f"tokens (mean wait {sum(waits) / max(1, len(waits)) * 1000:.0f} ms); the "
        f"workers' event loops woke up {late * 1000:.0f} ms late on average and used "
        f"{cpu:.1f} CPU s ({cpu / max(1, total) * 1000:.2f} ms per start)"
        + (" (the machine is too busy for this measurement)" if late > 0.05 else "")
    )
    # Both processes took part (the budget was shared, not used by one of them alone).
    assert min(counts) >= 0.2 * total, counts
    # And the backlog was not exhausted: the last start is after the window.
    assert max(max(s) for s in starts if s) >= end, "the backlog ran out inside the window"


def _start_workers(arguments: list[list[str]]) -> list[subprocess.Popen[str]]:
    """Start one worker per argument list, all at once; return when each said "ready"."""
    workers = [
        subprocess.Popen([sys.executable, str(WORKER), *args], stdout=subprocess.PIPE, text=True)
        for args in arguments
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready", "a worker did not start"
    except BaseException:
        for worker in workers:
            worker.kill()
            worker.wait(10)
        raise
    return workers


def _starts(out: Path) -> list[float]:
    """The start times a worker wrote (whole lines only: it may have been killed mid-line)."""
    lines = out.read_text().splitlines(keepends=True)
    return [float(line) for line in lines if line.endswith("\n")]


def _rows(out: Path, suffix: str) -> list[list[float]]:
    """The numbers of each line of a worker's side file (whole lines only)."""
    path = out.with_name(out.name + suffix)
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    return [[float(v) for v in line.split()] for line in lines if line.endswith("\n")]


def _cpu_used(rows: list[list[float]], begin: float, end: float) -> float:
    """CPU seconds one worker used within the window (from its lag lines)."""
    inside = [row[2] for row in rows if begin <= row[0] < end]
    return inside[-1] - inside[0] if len(inside) > 1 else 0.0


async def _first_start(outputs: list[Path], deadline: float) -> float:
    while time.monotonic() < deadline:
        found = [s[0] for s in map(_starts, outputs) if s]
        if found:
            return min(found)
        await asyncio.sleep(0.05)
    raise AssertionError("no handler started within 30 s of publishing")
