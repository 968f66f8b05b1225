"""Registers amqp://, amqps:// through the ``unimq`` entry-point group.

The client library is imported only when a transport is created, so an application that does
not use rabbitmq does not need it installed.
"""

from __future__ import annotations

from unimq.hookspecs import hookimpl
from unimq.plugins import TransportRegistry, lazy_transport

create_transport = lazy_transport(
    "aio_pika", "the aio-pika client", "rabbitmq", "unimq_rabbitmq.transport:RabbitMQTransport"
)


@hookimpl
def unimq_register_transports(registry: TransportRegistry) -> None:
    registry.add("amqp", create_transport, "RabbitMQ (aio-pika)", name="rabbitmq")
    registry.add("amqps", create_transport, "RabbitMQ (aio-pika)", name="rabbitmq")
