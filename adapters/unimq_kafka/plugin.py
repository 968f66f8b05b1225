"""Registers kafka:// through the ``unimq`` entry-point group.

The client library is imported only when a transport is created, so an application that does
not use kafka does not need it installed.
"""

from __future__ import annotations

from unimq.hookspecs import hookimpl
from unimq.plugins import TransportRegistry, lazy_transport

create_transport = lazy_transport(
    "confluent_kafka", "the confluent-kafka client", "kafka", "unimq_kafka.transport:KafkaTransport"
)


@hookimpl
def unimq_register_transports(registry: TransportRegistry) -> None:
    registry.add("kafka", create_transport, "Apache Kafka (confluent-kafka)", name="kafka")
