"""The shared conformance suite against a real Kafka broker (KRaft, single node)."""

from __future__ import annotations

import asyncio

import pytest

from unimq.testing.conformance import Backend, ConformanceSuite, TransportSuite

pytestmark = pytest.mark.realbroker


def kafka_backend(kafka_broker) -> Backend:  # type: ignore[no-untyped-def]
    async def restart() -> None:
        await asyncio.to_thread(kafka_broker.restart)

    return Backend(url=kafka_broker.url, restart=restart, name="kafka", time_scale=2.0)


class TestKafkaConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self, kafka_broker):  # type: ignore[no-untyped-def]
        return kafka_backend(kafka_broker)


class TestKafkaSPI(TransportSuite):
    """The SPI layer: the bare Kafka transport, one SPI promise per case."""

    @pytest.fixture
    def backend(self, kafka_broker):  # type: ignore[no-untyped-def]
        return kafka_backend(kafka_broker)
