"""The shared conformance suite against the RocketMQ 5 container (gRPC proxy).

Topics and groups are created on demand by the transport itself (``auto_provision``) through
the broker's admin protocol, reached via the name server the fixture publishes on 127.0.0.1.
"""

from __future__ import annotations

import asyncio

import pytest

from unimq.testing.conformance import Backend, ConformanceSuite, TransportSuite

pytest.importorskip("rocketmq")

pytestmark = pytest.mark.realbroker


def rocketmq_backend(broker) -> Backend:
    async def restart() -> None:
        await asyncio.to_thread(broker.restart)

    options = {"auto_provision": True}
    if getattr(broker, "namesrv_address", None):
        options["namesrv"] = broker.namesrv_address
    return Backend(
        url=broker.url,
        restart=restart if broker.can_control else None,
        name="rocketmq",
        time_scale=3.0,
        options=options,
    )


class TestRocketMQConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self, rocketmq_broker) -> Backend:
        return rocketmq_backend(rocketmq_broker)


class TestRocketMQSPI(TransportSuite):
    """The SPI layer: the bare RocketMQ transport, one SPI promise per case."""

    @pytest.fixture
    def backend(self, rocketmq_broker) -> Backend:
        return rocketmq_backend(rocketmq_broker)
