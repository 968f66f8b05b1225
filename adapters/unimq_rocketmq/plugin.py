"""Registers rocketmq:// through the ``unimq`` entry-point group.

The client library is imported only when a transport is created, so an application that does
not use rocketmq does not need ``rocketmq-python-client`` installed.
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
    from .transport import RocketMQTransport


@hookimpl
def unimq_register_transports(registry: TransportRegistry) -> None:
    registry.add(
        "rocketmq",
        create_transport,
        "Apache RocketMQ 5 (rocketmq-python-client, gRPC proxy)",
        name="rocketmq",
    )


def create_transport(
    url: BrokerURL, options: Mapping[str, Any], context: TransportContext
) -> RocketMQTransport:
    try:
        import rocketmq  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            f"{url.scheme}:// needs rocketmq-python-client: pip install 'unimq[rocketmq]'"
        ) from None
    from .transport import RocketMQTransport

    return RocketMQTransport(url, options, context)
