"""What faults to inject and how often: a :class:`FaultPlan`, and :class:`Faults`, the seeded
dice that decide each one.

Every decision comes from one ``random.Random(seed)``, drawn in the order the wrapped
transport is called, and every stall is a number of event-loop turns, never wall time: on an
in-process backend with a virtual clock a seed replays the same run (an ``outage`` is the one
fault measured in wall time, since the core's publish retries are).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, fields, replace
from typing import Any

#: The fault kinds, in the order of :class:`FaultPlan`'s fields.
KINDS = (
    "publish_before",
    "publish_after",
    "outage",
    "ack_lost",
    "receive_error",
    "stall",
    "redeliver",
    "reorder",
)


@dataclass(frozen=True)
class FaultPlan:
    """The chance of each fault per call of the wrapped transport (0 turns it off).

    - ``publish_before``: ``publish`` raises :class:`~unimq.errors.PublishError`, nothing sent.
    - ``publish_after``: the message is sent, then ``publish`` raises (a lost confirm: a caller
      that retries sends it twice).
    - ``outage``: the broker goes away for ``outage_seconds`` of wall time (every publish
      fails before sending), as in a restart; by default longer than the core's own publish
      retries (about 6 s), so a retry or dead-letter copy cannot get out either. At most one
      outage per run.
    - ``ack_lost``: ``ack`` returns but never reaches the broker; the delivery is handed out
      again later, as a broker does after a dropped connection.
    - ``receive_error``: ``receive`` raises :class:`~unimq.errors.ConnectionFailedError`.
    - ``stall``: a random number of event-loop turns (up to ``max_stall_turns``) before an
      operation, to shuffle interleavings.
    - ``redeliver``: a delivery is handed out twice (at-least-once duplicates).
    - ``reorder``: a delivery is held back behind the next one, never behind one of the same
      key on an ordered subscription (the only reordering a broker may do).
    """

    publish_before: float = 0.0
    publish_after: float = 0.0
    outage: float = 0.0
    ack_lost: float = 0.0
    receive_error: float = 0.0
    stall: float = 0.0
    redeliver: float = 0.0
    reorder: float = 0.0
    max_stall_turns: int = 12
    outage_seconds: float = 7.0

    @classmethod
    def default(cls) -> FaultPlan:
        """Every kind at a rate that leaves most messages a clean path."""
        return cls(
            publish_before=0.05,
            publish_after=0.03,
            outage=0.01,
            ack_lost=0.05,
            receive_error=0.01,
            stall=0.3,
            redeliver=0.04,
            reorder=0.1,
        )

    def only(self, *kinds: str) -> FaultPlan:
        """This plan with every kind not named turned off."""
        _check(kinds)
        off: dict[str, Any] = {kind: 0.0 for kind in KINDS if kind not in kinds}
        return replace(self, **off)

    def without(self, *kinds: str) -> FaultPlan:
        """This plan with the named kinds turned off."""
        _check(kinds)
        off: dict[str, Any] = {kind: 0.0 for kind in kinds}
        return replace(self, **off)

    def kinds(self) -> list[str]:
        return [f.name for f in fields(self) if f.name in KINDS and getattr(self, f.name) > 0]


def _check(kinds: tuple[str, ...]) -> None:
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(KINDS)}")


class Faults:
    """The seeded dice of one run. ``active`` is switched off when the faults stop."""

    def __init__(self, seed: int, plan: FaultPlan) -> None:
        self.seed = seed
        self.plan = plan
        self.random = random.Random(seed)
        self.active = True
        self.injected: Counter[str] = Counter()
        self._outage_until = 0.0

    def chance(self, kind: str) -> bool:
        """Whether to inject ``kind`` now (counted in :attr:`injected` when it is)."""
        if not self.active:
            return False
        rate: float = getattr(self.plan, kind)
        if rate <= 0 or self.random.random() >= rate:
            return False
        self.injected[kind] += 1
        return True

    def publish_refused(self) -> bool:
        """Whether this publish fails before sending (a single fault or an ongoing outage)."""
        if not self.active:
            return False
        now = time.monotonic()
        if now < self._outage_until:
            return True
        if self._outage_until == 0.0 and self.chance("outage"):  # one outage per run at most
            self._outage_until = now + self.plan.outage_seconds
            return True
        return self.chance("publish_before")

    def turns(self, most: int) -> int:
        return self.random.randint(0, most)

    async def stall(self) -> None:
        """Maybe give the event loop a few turns (never wall time)."""
        if self.chance("stall"):
            for _ in range(self.random.randint(1, self.plan.max_stall_turns)):
                await asyncio.sleep(0)
