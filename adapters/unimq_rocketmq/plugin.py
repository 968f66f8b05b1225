"""Registers rocketmq:// through the ``unimq`` entry-point group.

The client library is imported only when a transport is created, so an application that does
not use rocketmq does not need it installed.
"""

from __future__ import annotations

from unimq.hookspecs import hookimpl
from unimq.plugins import TransportRegistry, lazy_transport

create_transport = lazy_transport(
    "rocketmq", "rocketmq-python-client", "rocketmq", "unimq_rocketmq.transport:RocketMQTransport"
)


@hookimpl
def unimq_register_transports(registry: TransportRegistry) -> None:
    registry.add(
        "rocketmq",
        create_transport,
        "Apache RocketMQ 5 (rocketmq-python-client, gRPC proxy)",
        name="rocketmq",
    )
