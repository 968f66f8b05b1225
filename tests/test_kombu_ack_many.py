"""kombu ``ack_many`` without a server: the core acks a batch in one call (no ``Settlement``
per message), and each delivery is acked once, as ``ack`` would."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("kombu")

from unimq_kombu.subscription import KombuDelivery

from unimq.delivery.settle import ack_deliveries


class _Message:
    def __init__(self, tag: int) -> None:
        self.headers: dict[str, Any] = {}
        self.body = b"body"
        self.delivery_info: dict[str, Any] = {}
        self.properties = {"delivery_tag": tag}
        self.delivery_tag = tag


class _Owner:
    def __init__(self) -> None:
        self.settled: list[int] = []

    async def settle(self, delivery: KombuDelivery) -> None:
        self.settled.append(delivery._message.delivery_tag)


def test_the_core_acks_a_kombu_batch_in_one_call_each_delivery_once() -> None:
    """Fails on the old code: without ``ack_many`` every delivery came back to the core."""

    async def scenario() -> tuple[list[Any], list[int]]:
        owner = _Owner()
        deliveries = [KombuDelivery("t", _Message(tag), owner) for tag in range(1, 9)]  # type: ignore[arg-type]
        await deliveries[2].ack()  # acked before: not again
        left = await ack_deliveries(deliveries + deliveries[:3])  # repeats: once each
        return left, owner.settled

    left, settled = asyncio.run(scenario())
    assert left == []
    assert sorted(settled) == list(range(1, 9))
