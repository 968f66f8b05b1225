"""Seeded fault injection for any transport, and a schedule runner that checks the invariants.

- :func:`wrap` / :func:`inject` put a fault-injecting wrapper around a transport (or under a
  Broker): publish failures (before or after sending, outages), lost acks, receive failures,
  stalls, duplicate deliveries and reordering within what a broker allows, all drawn from a
  seed (:class:`FaultPlan`, :class:`Faults`).
- :func:`run_seeds` runs a random schedule per seed (subscribers with random policies, random
  publishes) through it and returns, per seed, the invariants it broke: nothing lost, nothing
  stuck after the faults stop, per-key order, attempts counted, a retry or dead-letter copy
  published before the original was acked (:class:`Ledger`).

See ``docs/testing.md`` ("Fault injection") for running it on your own adapter.
"""

from .ledger import Ledger
from .plan import KINDS, FaultPlan, Faults
from .runner import (
    SEED_VARIABLE,
    RunResult,
    Target,
    report,
    run_schedule,
    run_seeds,
    seeds_from_environment,
)
from .schedule import Schedule
from .transport import FaultyTransport, Observer, inject, wrap

__all__ = [
    "KINDS",
    "SEED_VARIABLE",
    "FaultPlan",
    "Faults",
    "FaultyTransport",
    "Ledger",
    "Observer",
    "RunResult",
    "Schedule",
    "Target",
    "inject",
    "report",
    "run_schedule",
    "run_seeds",
    "seeds_from_environment",
    "wrap",
]
