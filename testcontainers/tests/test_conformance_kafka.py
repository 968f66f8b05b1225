"""The shared conformance suite against a real Kafka broker (KRaft, single node)."""

from __future__ import annotations

import asyncio

import pytest

from unimq.testing.conformance import Backend, ConformanceSuite

pytestmark = pytest.mark.realbroker


class TestKafkaConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self, kafka_broker):  # type: ignore[no-untyped-def]
        async def restart() -> None:
            await asyncio.to_thread(kafka_broker.restart)

        return Backend(url=kafka_broker.url, restart=restart, name="kafka", time_scale=2.0)
