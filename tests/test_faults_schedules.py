"""Seeded fault schedules on memory and the toy adapter (``unimq.testing.faults``).

CI runs 1,000 fixed seeds with every kind of fault: 400 on memory with a virtual clock
(deterministic replays), 300 on memory in real time with ordered subscribers, 300 on the toy
third-party adapter, plus a few broker outages. A failing seed is printed with the command that
replays it; ``UNIMQ_FAULT_SEED`` runs other seeds (``=1234``, ``=1,2,3`` or ``=random:500``).

The seeds that found the last defect (on a virtual clock, a paused delivery holding the
subscriber's only slot stopped ``VirtualClock.advance()`` once another delivery was ready: the
delivery waiting for the slot counted as in flight) run on their own too, as its regression test.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from unimq.testing.faults import (
    FaultPlan,
    RunResult,
    Target,
    report,
    run_seeds,
    seeds_from_environment,
)

HERE = "tests/test_faults_schedules.py"

MEMORY_VIRTUAL = Target(
    "memory (virtual clock, ordered)",
    "memory://",
    virtual_time=True,
    ordering=True,
    settle_within=15,
)
MEMORY_REAL = Target(
    "memory (real time, ordered)",
    "memory://",
    virtual_time=False,
    ordering=True,
    time_unit=0.01,
    settle_within=30,
)
TOY = Target(
    "toy adapter",
    "toy://faults-{run}",
    virtual_time=False,
    ordering=False,
    time_unit=0.01,
    settle_within=30,
)
# The bounds are generous: a green run never waits for them, and many runs share one event
# loop on a machine that may be busy.

#: Every fault kind but the outage (wall-time seconds each: run on a few seeds only, below).
GREEN_PLAN = FaultPlan.default().without("outage")


@pytest.fixture(autouse=True)
def quiet_logs() -> Iterator[None]:
    """Thousands of injected faults log thousands of warnings; keep the output readable."""
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


def replay(test: str) -> object:
    return lambda seed: f"UNIMQ_FAULT_SEED={seed} python -m pytest {HERE} -k {test}"


async def check(target: Target, plan: FaultPlan, seeds: list[int], test: str) -> list[RunResult]:
    results = await run_seeds(seeds, target, plan, parallel=128)
    failed = [result for result in results if not result.ok]
    assert not failed, report(results, replay(test))  # type: ignore[arg-type]
    return results


async def test_memory_virtual_clock_schedules() -> None:
    seeds = seeds_from_environment(range(0, 400))
    await check(MEMORY_VIRTUAL, GREEN_PLAN, seeds, "memory_virtual_clock_schedules")


async def test_memory_real_time_ordered_schedules() -> None:
    seeds = seeds_from_environment(range(10_000, 10_300))
    await check(MEMORY_REAL, GREEN_PLAN, seeds, "memory_real_time_ordered_schedules")


async def test_toy_adapter_schedules() -> None:
    seeds = seeds_from_environment(range(20_000, 20_300))
    await check(TOY, GREEN_PLAN, seeds, "toy_adapter_schedules")


async def test_memory_outage_schedules() -> None:
    """A 7 s outage, longer than any quick publish retry: copies wait and get out after."""
    seeds = seeds_from_environment(range(30_000, 30_012))
    results = await check(MEMORY_REAL, FaultPlan(outage=0.1, stall=0.3), seeds, "outage")
    assert sum(result.injected["outage"] for result in results) >= 3, "too few outages"


# -- the seeds that found the last defect --------------------------------------------------


async def test_memory_virtual_clock_paused_only_slot() -> None:
    """A paused delivery (ordered in-place retry, or a settlement trying again after a publish
    fault) holding the only slot: advance() waited forever for the delivery queued for the slot
    (main at 10b6959; fixed by parking deliveries that wait for a slot)."""
    ordered = Target(
        "memory (virtual clock, ordered)",
        "memory://",
        virtual_time=True,
        ordering=True,
        settle_within=2,
    )
    unordered = Target(
        "memory (virtual clock)",
        "memory://",
        virtual_time=True,
        ordering=False,
        settle_within=2,
    )
    results = await run_seeds([15, 39], ordered, FaultPlan())
    results += await run_seeds([145, 148], unordered, FaultPlan(publish_before=0.05))
    assert all(result.ok for result in results), report(
        results,
        replay("paused_only_slot"),  # type: ignore[arg-type]
    )
