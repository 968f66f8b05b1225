"""The conformance suite against a real RabbitMQ (container, or external broker)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from unimq.testing.conformance import Backend, ConformanceSuite, TransportSuite

pytestmark = pytest.mark.realbroker


#: Known defects (case -> reason): strict xfails, removed when fixed. None today. (A publish to a
#: topic no queue is bound to raises PublishError on RabbitMQ: declared as
#: ``Capabilities.keeps_unread=False`` and checked by the SPI case for it.)
KNOWN_DEFECTS: dict[str, str] = {}


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
