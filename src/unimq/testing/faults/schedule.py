"""A random but seeded workload: subscribers with random policies and the messages to publish.

Everything in a :class:`Schedule` follows from its seed, and so does every handler outcome
(:meth:`SubscriberPlan.outcome` draws from the seed, the message id and the attempt), so the
same seed gives the same workload on every backend and every replay.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ...naming import dead_letter_topic, retry_topic
from .plan import FaultPlan

GROUP = "g"


@dataclass(frozen=True)
class SubscriberPlan:
    """One subscriber: its policies and how its handler behaves.

    Per attempt the handler takes up to ``turns`` event-loop turns, then raises ``Reject``
    (chance ``reject``), ``RetryLater`` (``retry_later``), a plain error (``fail``), or
    succeeds.
    """

    index: int
    ordered: bool
    concurrency: int
    idempotent: bool
    max_attempts: int
    backoff: float
    fail: float
    retry_later: float
    reject: float
    turns: int
    later: float  # the delay a RetryLater asks for

    @property
    def topic(self) -> str:
        return f"faults.t{self.index}"

    @property
    def retry_topic(self) -> str:
        return retry_topic(self.topic, GROUP)

    @property
    def dead_letter_topic(self) -> str:
        return dead_letter_topic(self.topic, GROUP)

    def outcome(self, seed: int, message_id: str, attempt: int) -> tuple[str, int]:
        """``(outcome, turns)`` of one attempt: ``ok``, ``fail``, ``retry_later``, ``reject``."""
        dice = random.Random(f"{seed}/{self.index}/{message_id}/{attempt}")
        turns = dice.randint(0, self.turns)
        roll = dice.random()
        for outcome, chance in (
            ("reject", self.reject),
            ("retry_later", self.retry_later),
            ("fail", self.fail),
        ):
            if roll < chance:
                return outcome, turns
            roll -= chance
        return "ok", turns


@dataclass(frozen=True)
class PublishPlan:
    subscriber: int
    message_id: str
    key: str | None
    delay: float | None
    pause: int  # event-loop turns before publishing
    wait: float  # seconds of (virtual or real) time to let pass before publishing


@dataclass(frozen=True)
class Schedule:
    seed: int
    plan: FaultPlan
    subscribers: tuple[SubscriberPlan, ...]
    publishes: tuple[PublishPlan, ...] = field(default=())

    @classmethod
    def generate(
        cls,
        seed: int,
        plan: FaultPlan,
        *,
        ordering: bool = True,
        time_unit: float = 1.0,
    ) -> Schedule:
        """A small schedule: 1-3 subscribers, 4-24 messages; times in ``time_unit`` seconds
        (1 on a virtual clock; a few milliseconds in real time).
        """
        dice = random.Random(seed)
        subscribers = []
        for index in range(dice.randint(1, 3)):
            subscriber = SubscriberPlan(
                index=index,
                ordered=ordering and dice.random() < 0.5,
                concurrency=dice.randint(1, 8),
                idempotent=dice.random() < 0.3,
                max_attempts=dice.randint(1, 4),
                backoff=dice.choice([0.0, 0.05, 0.2, 1.0]) * time_unit,
                fail=dice.choice([0.0, 0.1, 0.3]),
                retry_later=dice.choice([0.0, 0.05, 0.15]),
                reject=dice.choice([0.0, 0.0, 0.05]),
                turns=dice.choice([0, 2, 8]),
                later=dice.choice([0.0, 0.1, 0.5]) * time_unit,
            )
            subscribers.append(subscriber)
        publishes = []
        for n in range(dice.randint(4, 24)):
            subscriber = dice.choice(subscribers)
            key = dice.choice(["a", "b", "c", "hot", "hot", "hot", None])
            delayed = not subscriber.ordered and dice.random() < 0.2
            publishes.append(
                PublishPlan(
                    subscriber=subscriber.index,
                    message_id=f"s{seed}-m{n}",
                    key=key,
                    delay=dice.choice([0.05, 0.3, 1.0]) * time_unit if delayed else None,
                    pause=dice.choice([0, 0, 1, 5, 20]),
                    wait=dice.choice([0.0, 0.0, 0.0, 0.05, 0.3]) * time_unit,
                )
            )
        return cls(seed, plan, tuple(subscribers), tuple(publishes))

    def describe(self) -> str:
        subscribers = ", ".join(
            f"t{s.index}(ordered={s.ordered}, concurrency={s.concurrency}, "
            f"idempotent={s.idempotent}, max_attempts={s.max_attempts})"
            for s in self.subscribers
        )
        return f"{len(self.publishes)} messages to {subscribers}; faults {self.plan.kinds()}"
