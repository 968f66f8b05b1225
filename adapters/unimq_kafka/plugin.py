"""Registers kafka:// through the ``unimq`` entry-point group.

The client library is imported only when a transport is created, so an application that does
not use kafka does not need ``confluent-kafka`` installed.
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
    from .transport import KafkaTransport


@hookimpl
def unimq_register_transports(registry: TransportRegistry) -> None:
    registry.add("kafka", create_transport, "Apache Kafka (confluent-kafka)", name="kafka")


def create_transport(
    url: BrokerURL, options: Mapping[str, Any], context: TransportContext
) -> KafkaTransport:
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            f"{url.scheme}:// needs the confluent-kafka client: pip install 'unimq[kafka]'"
        ) from None
    from .transport import KafkaTransport

    return KafkaTransport(url, options, context)
