"""Delayed delivery on Kafka, which has none: delay-tier topics and a scheduler.

A delayed message is written to ``unimq.delay.<tier>`` for the largest tier that fits in its
remaining delay, with headers naming its destination topic, its final due time and when this
hop ends (``release``). Every message of one tier topic waits the same time, so a partition
is ordered by release time: the scheduler only needs to look at each partition's head. The
consumer thread holds the head back (pausing the partition) until it is within
:data:`HORIZON` of its release, then a timer in the event loop fires at the release time and
the scheduler either publishes the message to its destination (due) or on to the next tier
(multi-hop: 30 days = thirty 1-day hops, then smaller ones). Only then is the tier offset
acknowledged, so a crash replays the hop instead of losing it.

Everything lives in Kafka, so delays survive broker and process restarts; the scheduler is a
consumer group (``unimq.delay-scheduler``) shared by every process using the transport, so
they split the tier partitions between them. It starts lazily: on the first delayed publish
or the first subscription (retry backoffs travel this way too).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from .headers import to_wire
from .names import DELAY_SCHEDULER_GROUP, delay_topic
from .subscription import KafkaDelivery, KafkaSubscription

logger = logging.getLogger("unimq.kafka.delay")

DESTINATION = "unimq-delay-topic"
DUE = "unimq-delay-due"  # epoch ms: when the message is due at its destination
RELEASE = "unimq-delay-release"  # epoch ms: when this hop ends
DELAY_HEADERS = frozenset({DESTINATION, DUE, RELEASE})

#: The scheduler reads a tier message this long before its release, and a message due within
#: this long waits in memory instead of taking another hop.
HORIZON = 1.0
#: A tier is chosen if it overshoots the remaining delay by at most this much (the hop is
#: then shortened): saves a cascade of small hops for "5 s" published at 4.999 s.
_TIER_SLACK = 0.1
#: Tier topics keep messages for a week at least: longer than any hop.
TIER_RETENTION_MS = 7 * 86400 * 1000

Send = Callable[[str, bytes, "bytes | None", list[tuple[str, bytes]]], Awaitable[None]]


class DelayRouter:
    """Picks the tier topic and the hop's release time for a message due at ``due``."""

    def __init__(self, tiers: Sequence[float]) -> None:
        self.tiers = tuple(sorted(tiers))
        self.topics = {tier: delay_topic(tier) for tier in self.tiers}

    def route(self, due: float, now: float) -> tuple[str, float]:
        remaining = due - now
        tier = self.tiers[0]
        for candidate in self.tiers:
            if candidate <= remaining + _TIER_SLACK:
                tier = candidate
        return self.topics[tier], now + min(tier, max(remaining, 0.0))


def delay_headers(
    headers: Mapping[str, str], destination: str, due: float, release: float
) -> list[tuple[str, bytes]]:
    wire = [
        (name, value.encode() if isinstance(value, str) else value)
        for name, value in to_wire(headers).items()
        if name not in DELAY_HEADERS
    ]
    wire.append((DESTINATION, destination.encode()))
    wire.append((DUE, str(int(due * 1000)).encode()))
    wire.append((RELEASE, str(int(release * 1000)).encode()))
    return wire


def _release_of(message: Any) -> float:
    for name, value in message.headers() or ():
        if name == RELEASE and value:
            try:
                return int(value) / 1000
            except ValueError:
                return 0.0
    return 0.0


def gate(message: Any) -> float:
    """Seconds until the consumer thread may hand ``message`` over (runs on that thread)."""
    return _release_of(message) - HORIZON - time.time()


class DelayScheduler:
    """Moves due messages out of the tier topics; one per transport, started lazily."""

    def __init__(
        self,
        router: DelayRouter,
        send: Send,
        consumer_config: Mapping[str, Any],
        revoke_timeout: float,
    ) -> None:
        self._router = router
        self._send = send
        self._config = {
            **consumer_config,
            "group.id": DELAY_SCHEDULER_GROUP,
            "auto.offset.reset": "earliest",
        }
        self._revoke_timeout = revoke_timeout
        self._subscription: KafkaSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Task[None]] = set()
        self._closing = False

    async def start(self) -> None:
        subscription = KafkaSubscription(
            self._config,
            list(self._router.topics.values()),
            prefetch=100_000,  # bounded by HORIZON instead: only near-due heads are read
            name="unimq-kafka-delay-scheduler",
            revoke_timeout=self._revoke_timeout,
            gate=gate,
        )
        await subscription.start()
        self._subscription = subscription
        self._task = asyncio.create_task(self._run(subscription), name="unimq-kafka-delays")

    async def _run(self, subscription: KafkaSubscription) -> None:
        while True:
            delivery = await subscription.receive()
            if delivery is None:
                return
            if self._closing:
                continue
            # One task per message read: at most HORIZON's worth of a tier at a time.
            job = asyncio.create_task(self._release(delivery))
            self._jobs.add(job)
            job.add_done_callback(self._jobs.discard)

    async def _release(self, delivery: KafkaDelivery) -> None:
        wait = _release_of(delivery._message) - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        headers = dict(delivery.headers)
        destination = headers.get(DESTINATION)
        try:
            due = int(headers[DUE]) / 1000
        except (KeyError, ValueError):
            due = 0.0
        if not destination:
            logger.error("delayed message %s has no destination; dropping it", delivery.native_id)
            await delivery.ack()
            return
        key = delivery._message.key()
        pause = 0.2
        while not self._closing:
            now = time.time()
            try:
                if due - now <= HORIZON:
                    if due > now:
                        await asyncio.sleep(due - now)
                    wire = [(n, v.encode()) for n, v in headers.items() if n not in DELAY_HEADERS]
                    await self._send(destination, delivery.body, key, wire)
                else:
                    topic, release = self._router.route(due, now)
                    wire = delay_headers(headers, destination, due, release)
                    await self._send(topic, delivery.body, key, wire)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(
                    "moving delayed message %s on failed (retrying): %s", delivery.native_id, exc
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
        else:
            return  # closing: not acknowledged, replayed by whoever owns the partition next
        await delivery.ack()

    async def close(self) -> None:
        self._closing = True
        subscription = self._subscription
        if subscription is not None:
            await subscription.stop()
        for job in list(self._jobs):
            job.cancel()  # not acknowledged: replayed by the partition's next owner
        if self._jobs:
            await asyncio.wait(list(self._jobs), timeout=5)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if subscription is not None:
            await subscription.close()
