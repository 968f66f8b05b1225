"""The conformance suite against a real RabbitMQ (container, or external broker)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from unimq.testing.conformance import Backend, ConformanceSuite

pytestmark = pytest.mark.realbroker


class TestRabbitMQConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self, rabbitmq_broker: Any) -> Backend:
        async def restart() -> None:
            await asyncio.to_thread(rabbitmq_broker.restart)

        return Backend(
            url=rabbitmq_broker.url,
            restart=restart if rabbitmq_broker.can_control else None,
            name="rabbitmq",
            time_scale=2.0,
        )
