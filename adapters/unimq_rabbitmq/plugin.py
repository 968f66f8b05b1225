"""Registers amqp://, amqps:// through the ``unimq`` entry-point group.

The client library is imported only when a transport is created, so an application that does
not use rabbitmq does not need ``aio-pika`` installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from unimq.errors import MissingDependencyError
from unimq.hookspecs import hookimpl
from unimq.plugins import TransportRegistry
from unimq.transport import TransportContext
from unimq.url import BrokerURL

if TYPE_CHECKING:
    from .transport import RabbitMQTransport


@hookimpl
def unimq_register_transports(registry: TransportRegistry) -> None:
    registry.add("amqp", create_transport, "RabbitMQ (aio-pika)", name="rabbitmq")
    registry.add("amqps", create_transport, "RabbitMQ (aio-pika)", name="rabbitmq")


def create_transport(
    url: BrokerURL, options: Mapping[str, Any], context: TransportContext
) -> RabbitMQTransport:
    try:
        import aio_pika  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            f"{url.scheme}:// needs the aio-pika client: pip install 'unimq[rabbitmq]'"
        ) from None
    from .transport import RabbitMQTransport

    return RabbitMQTransport(url, options, context)
