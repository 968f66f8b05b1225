"""Regression test for issue 12: revoked deliveries queued in a lane must not run.

2830ee5 had no notion of revocation (``Capabilities.revocable`` is new), so this lives apart
from test_pipeline_v2.py, whose cases run unchanged against the old code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from unimq import BatchPolicy, Broker
from unimq.hookspecs import hookimpl
from unimq.memory.transport import MemoryDelivery, MemorySubscription, MemoryTransport
from unimq.plugins import TransportRegistry, register_plugin
from unimq.transport import Capabilities, SubscriptionSpec, TransportContext
from unimq.url import BrokerURL

REVOKED: set[str] = set()


class RevocableDelivery(MemoryDelivery):
    __slots__ = ()

    @property
    def revoked(self) -> bool:
        return self._message.body.decode() in REVOKED


class RevocableSubscription(MemorySubscription):
    async def receive(self) -> MemoryDelivery | None:
        delivery = await super().receive()
        return None if delivery is None else self._revocable(delivery)

    async def receive_many(self, max_n: int) -> list[MemoryDelivery]:
        got = await super().receive_many(max_n)  # (its first is already revocable)
        return [d if isinstance(d, RevocableDelivery) else self._revocable(d) for d in got]

    def _revocable(self, delivery: MemoryDelivery) -> RevocableDelivery:
        revocable = RevocableDelivery(delivery._message, self)
        self._unsettled.discard(delivery)
        self._unsettled.add(revocable)
        return revocable


class RevocableTransport(MemoryTransport):
    capabilities = Capabilities(max_delay=None, durable=False, revocable=True)

    def __init__(
        self, url: BrokerURL, options: Mapping[str, Any], context: TransportContext
    ) -> None:
        super().__init__(BrokerURL.parse("memory://"), options, context)

    async def subscribe(self, spec: SubscriptionSpec) -> MemorySubscription:
        queue = self.hub.group_queue(
            spec.topic, spec.group, broadcast=spec.broadcast, ordered=spec.ordered
        )
        subscription = RevocableSubscription(queue)
        self._subscriptions.append(subscription)
        return subscription


class _RevocablePlugin:
    @hookimpl
    def unimq_register_transports(self, registry: TransportRegistry) -> None:
        registry.add("revocable-memory", RevocableTransport, "memory with revocable deliveries")


register_plugin(_RevocablePlugin(), name="unimq-test-revocable")


async def test_revoked_deliveries_queued_in_a_lane_do_not_run() -> None:
    """2830ee5 checked only _stopping: lane deliveries of a revoked partition kept running."""
    broker = Broker("revocable-memory://")
    gate = asyncio.Event()
    seen: list[str] = []

    @broker.subscriber("t", group="g", ordered=True, concurrency=2)
    async def handle(body: str) -> None:
        if body == "0":
            await gate.wait()
        seen.append(body)

    async with broker:
        for i in range(5):
            await broker.publish("t", str(i), key="k")
        await asyncio.sleep(0.05)
        REVOKED.update({"1", "2", "3", "4"})  # the partition went to another consumer
        gate.set()
        await asyncio.sleep(0.1)
        REVOKED.clear()
    assert seen == ["0"]


async def test_revoked_deliveries_never_join_a_batch() -> None:
    """A batch subscriber drops revoked deliveries before the call, also those admitted in
    one loop with the rest of the batch (delivery.batching.admit_ready)."""
    broker = Broker("revocable-memory://")
    seen: list[bytes] = []

    @broker.subscriber("t", group="g", batch=BatchPolicy(max_size=10, max_wait=0.05))
    async def handle(items: list[bytes]) -> None:
        seen.extend(items)

    async with broker:
        REVOKED.update({"2", "4"})
        try:
            await broker.publish_batch("t", [str(i).encode() for i in range(6)])
            await asyncio.sleep(0.2)
        finally:
            REVOKED.clear()
    assert seen == [b"0", b"1", b"3", b"5"]
