"""Run seeded schedules on a backend through the fault injector and check the invariants.

One run: build a Broker with the schedule's subscribers, put the injector under it, publish
the schedule's messages while faults are on (the driver retries a refused publish with the
same id, as a careful caller does), switch the faults off, and let the run settle: every
message must be resolved and ``drain()`` must return within a bound ("nothing stuck"). Then
the ledger checks the rest. Runs never hang: every wait is bounded, and a run that overruns
is a violation.

Many runs share one event loop (``run_seeds``): each has its own broker, virtual clock and
dice, so they do not interfere, and the core's few real-time pauses (a failed ``receive`` is
retried after 1 s) overlap instead of adding up.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ... import Message, Reject, RetryLater, RetryPolicy, fixed
from ...broker import Broker
from ...errors import PublishError
from ..clock import VirtualClock
from .ledger import Ledger
from .plan import FaultPlan, Faults
from .schedule import GROUP, PublishPlan, Schedule, SubscriberPlan
from .transport import inject

#: The environment variable that replays or adds seeds (``UNIMQ_FAULT_SEED=1234``,
#: ``UNIMQ_FAULT_SEED=1,2,3``, ``UNIMQ_FAULT_SEED=random:500``).
SEED_VARIABLE = "UNIMQ_FAULT_SEED"
#: Wall seconds the publish phase may take (it may sit out an outage).
PUBLISH_PHASE_LIMIT = 60.0
#: On a virtual clock, "stuck" is judged in virtual time; real time only bounds a run that
#: stopped the clock itself, at this multiple of ``settle_within``.
WALL_BACKSTOP = 4.0


@dataclass(frozen=True)
class Target:
    """Where schedules run: ``url`` (a fresh one per run: ``{run}`` is replaced), whether the
    broker runs on a :class:`VirtualClock` (in-process backends only) and whether it offers
    ordering."""

    name: str
    url: str
    virtual_time: bool
    ordering: bool
    #: Seconds per schedule time unit: 1 on a virtual clock, a few ms in real time.
    time_unit: float = 1.0
    #: Seconds the run may take to settle after the faults stop: virtual seconds on a virtual
    #: clock (so a busy machine cannot fail a green run; ``WALL_BACKSTOP`` times this in real
    #: seconds still bounds it), real seconds otherwise.
    settle_within: float = 15.0


@dataclass
class RunResult:
    seed: int
    target: str
    violations: list[str] = field(default_factory=list)
    injected: Counter[str] = field(default_factory=Counter)
    description: str = ""

    @property
    def ok(self) -> bool:
        return not self.violations


def seeds_from_environment(default: Iterable[int]) -> list[int]:
    """The CI seeds, or those of ``UNIMQ_FAULT_SEED`` (a list, or ``random:N``)."""
    value = os.environ.get(SEED_VARIABLE, "").strip()
    if not value:
        return list(default)
    if value.startswith("random:"):
        import random

        return [random.randrange(10**9) for _ in range(int(value.split(":", 1)[1]))]
    return [int(part) for part in value.replace(" ", "").split(",") if part]


def report(results: list[RunResult], replay: Callable[[int], str]) -> str:
    """A failure message: each failing seed, what broke, and the one-line replay command."""
    failed = [result for result in results if not result.ok]
    lines = [f"{len(failed)} of {len(results)} schedules broke an invariant:"]
    for result in failed[:10]:
        lines.append(f"- seed {result.seed} on {result.target}: {result.description}")
        lines += [f"    {violation}" for violation in result.violations[:5]]
        lines.append(f"    injected: {dict(result.injected)}")
        lines.append(f"    replay: {replay(result.seed)}")
    return "\n".join(lines)


async def run_seeds(
    seeds: Iterable[int], target: Target, plan: FaultPlan, *, parallel: int = 32
) -> list[RunResult]:
    """Run one schedule per seed, ``parallel`` at a time, in this event loop."""
    gate = asyncio.Semaphore(parallel)

    async def one(seed: int) -> RunResult:
        async with gate:
            return await run_schedule(schedule_for(seed, target, plan), target)

    return list(await asyncio.gather(*(one(seed) for seed in seeds)))


def schedule_for(seed: int, target: Target, plan: FaultPlan) -> Schedule:
    """The schedule of ``seed`` as ``target`` runs it."""
    return Schedule.generate(
        seed,
        plan,
        ordering=target.ordering,
        time_unit=target.time_unit,
    )


async def run_schedule(schedule: Schedule, target: Target) -> RunResult:
    result = RunResult(schedule.seed, target.name, description=schedule.describe())
    faults = Faults(schedule.seed, schedule.plan)
    ledger = Ledger(schedule)
    clock = VirtualClock(start=1_000_000_000.0) if target.virtual_time else None
    options: dict[str, Any] = {"graceful_timeout": 2.0}
    if clock is not None:
        options["clock"] = clock
    broker = Broker(target.url.format(run=uuid.uuid4().hex[:12]), **options)
    for plan in schedule.subscribers:
        _subscribe(broker, plan, schedule.seed, ledger)
    inject(broker, faults, ledger)
    run = _Run(schedule, target, broker, clock, faults, ledger, result)
    settle_limit = target.settle_within * (WALL_BACKSTOP + 1 if target.virtual_time else 2)
    try:
        # The publish phase may sit out an outage; the settle phase has its own bound.
        await asyncio.wait_for(run.drive(), PUBLISH_PHASE_LIMIT)
        await asyncio.wait_for(run.settle(), settle_limit)
    except Stuck as overrun:
        result.violations.append(str(overrun))
    except asyncio.TimeoutError:
        result.violations.append(
            f"stuck: the run did not end within {settle_limit:.0f}s of the faults stopping"
        )
    except Exception as exc:  # the harness itself must not hide a failure
        result.violations.append(f"the run raised {type(exc).__name__}: {exc}")
    finally:
        try:
            await asyncio.wait_for(broker.stop(timeout=1.0), 10)
        except asyncio.TimeoutError:
            result.violations.append("stuck: Broker.stop() did not return in 10s")
    cut_short = any(violation.startswith("stuck") for violation in result.violations)
    result.violations += ledger.violations(finished=not cut_short)
    result.injected = faults.injected
    return result


def _subscribe(broker: Broker, plan: SubscriberPlan, seed: int, ledger: Ledger) -> None:
    @broker.subscriber(
        plan.topic,
        group=GROUP,
        ordered=plan.ordered,
        concurrency=plan.concurrency,
        idempotent=plan.idempotent,
        retry=RetryPolicy(max_attempts=plan.max_attempts, backoff=fixed(plan.backoff)),
    )
    async def handle(message: Message) -> None:
        outcome, turns = plan.outcome(seed, message.id, message.attempt)
        ledger.started(plan.index, message.id, message.attempt, outcome)
        for _ in range(turns):
            await asyncio.sleep(0)
        if outcome == "reject":
            raise Reject("scheduled rejection")
        if outcome == "retry_later":
            raise RetryLater(plan.later, reason="scheduled retry")
        if outcome == "fail":
            raise RuntimeError("scheduled failure")
        ledger.succeeded(plan.index, message.id, message.attempt)


class Stuck(Exception):
    """A wait of the run that never returned (reported as a violation)."""


@dataclass
class _Run:
    schedule: Schedule
    target: Target
    broker: Broker
    clock: VirtualClock | None
    faults: Faults
    ledger: Ledger
    result: RunResult

    async def let_time_pass(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self.clock is None:
            await asyncio.sleep(seconds)
            return
        limit = self.target.settle_within * WALL_BACKSTOP
        if self.faults.active and self.schedule.plan.outage > 0:
            limit += 2 * self.schedule.plan.outage_seconds  # may wait out an outage meanwhile
        try:
            await asyncio.wait_for(self.clock.advance(seconds), limit)
        except asyncio.TimeoutError:
            raise Stuck(
                f"stuck: VirtualClock.advance({seconds:g}) did not return within {limit:.0f}s"
                + ("" if self.faults.active else " of the faults stopping")
            ) from None

    async def drive(self) -> None:
        broker = self.broker
        await broker.start()
        plans = {plan.index: plan for plan in self.schedule.subscribers}
        for publish in self.schedule.publishes:
            for _ in range(publish.pause):
                await asyncio.sleep(0)
            await self.let_time_pass(publish.wait)
            plan = plans[publish.subscriber]
            self.ledger.expect(plan.index, publish.message_id, publish.key)
            await self.publish_until_sent(plan, publish)
        self.faults.active = False

    async def publish_until_sent(self, plan: SubscriberPlan, publish: PublishPlan) -> None:
        """Publish, retrying a refused publish with the same id (an outage included)."""
        for tries in itertools.count():
            try:
                await self.broker.publish(
                    plan.topic,
                    b"x",
                    key=publish.key,
                    message_id=publish.message_id,
                    delay=publish.delay,
                )
                return
            except PublishError:
                # A few quick tries, then wall-time pauses: an outage lasts seconds.
                await asyncio.sleep(0 if tries < 5 else 0.05)

    async def settle(self) -> None:
        """After the faults: resolve everything, then ``drain()``, both within bounds."""
        began = time.monotonic()
        clock = self.clock
        virtual_began = clock.now() if clock is not None else 0.0
        wall_limit = self.target.settle_within * (WALL_BACKSTOP if clock is not None else 1.0)
        step = 0.25 * self.target.time_unit
        while self.ledger.unresolved():
            overdue = clock is not None and clock.now() - virtual_began > self.target.settle_within
            if overdue or time.monotonic() - began > wall_limit:
                missing = self.ledger.unresolved()
                self.result.violations.append(
                    f"stuck: {len(missing)} message(s) unresolved {self.target.settle_within:.0f}s "
                    f"after the faults stopped: {missing[:5]}"
                )
                return
            await self.let_time_pass(step if self.clock is not None else 0.005)
        try:
            await self.broker.drain(timeout=self.target.settle_within)
        except asyncio.TimeoutError:
            self.result.violations.append(
                f"stuck: drain() did not return {self.target.settle_within:.0f}s after the "
                "faults stopped"
            )
