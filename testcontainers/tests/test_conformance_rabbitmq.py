"""The conformance suite against a real RabbitMQ (container, or external broker)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from unimq.testing.conformance import Backend, ConformanceSuite, TransportSuite

pytestmark = pytest.mark.realbroker


#: Known defects (issue 12); the fixes remove the entries (the cases are strict xfails).
KNOWN_DEFECTS = {
    "test_spi_publish_to_a_topic_no_one_reads_yet_keeps_the_message": (
        "RabbitMQ refuses a publish to a topic no queue is bound to (PublishError, returned "
        "unroutable) where docs/writing-an-adapter.md says the message is kept"
    ),
}


def rabbitmq_backend(rabbitmq_broker: Any) -> Backend:
    async def restart() -> None:
        await asyncio.to_thread(rabbitmq_broker.restart)

    return Backend(
        url=rabbitmq_broker.url,
        restart=restart if rabbitmq_broker.can_control else None,
        name="rabbitmq",
        time_scale=2.0,
        known_defects=KNOWN_DEFECTS,
    )


class TestRabbitMQConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self, rabbitmq_broker: Any) -> Backend:
        return rabbitmq_backend(rabbitmq_broker)


class TestRabbitMQSPI(TransportSuite):
    """The SPI layer: the bare RabbitMQ transport, one SPI promise per case."""

    @pytest.fixture
    def backend(self, rabbitmq_broker: Any) -> Backend:
        return rabbitmq_backend(rabbitmq_broker)
