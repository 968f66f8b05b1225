"""Real-broker test support for unimq: broker handles and how to get one.

``get_broker(kind)`` returns a ready :class:`BrokerHandle` for ``kind`` in
``rabbitmq``/``kafka``/``rocketmq``: a container started with the
``testcontainers`` library (default), or an external broker when
``UNIMQ_TEST_BROKERS=external``. See ``unimq_brokers.config`` for the
environment variables and docs/testing.md for the whole story. The pytest
fixtures live in ``unimq_brokers.fixtures``.
"""

from __future__ import annotations

import os

# testcontainers' reaper (Ryuk) is an image pulled from Docker Hub; it cannot
# exist without a registry, and the fixtures remove their containers
# themselves. Must be set before testcontainers reads its config.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

from . import config
from .handle import BrokerControlUnsupported, BrokerHandle, BrokerUnavailable, ExternalBroker
from .rocketmq_admin import RocketMQAdmin

KINDS = ("rabbitmq", "kafka", "rocketmq")


class ExternalRocketMQ(RocketMQAdmin, ExternalBroker):
    pass


def get_external(kind: str) -> BrokerHandle:
    url = config.external_url(kind)
    if not url:
        raise BrokerUnavailable(
            f"UNIMQ_TEST_BROKERS=external but {config.URL_ENV_VARS[kind]} is not set"
        )
    if kind == "rocketmq":
        return ExternalRocketMQ(kind, url, mqadmin=config.external_mqadmin())
    return ExternalBroker(kind, url)


def get_broker(kind: str, client=None) -> BrokerHandle:
    """Start (or look up) a broker of ``kind`` and return its ready handle.

    Raises BrokerUnavailable when Docker/the image/the external URL is missing.
    Container handles must be released with ``handle.remove()``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown broker kind {kind!r}")
    if config.mode() == "external":
        return get_external(kind)
    from . import containers

    client = client or containers.docker_client()
    containers.remove_orphans(client)
    return containers.STARTERS[kind](client)


__all__ = [
    "KINDS",
    "BrokerControlUnsupported",
    "BrokerHandle",
    "BrokerUnavailable",
    "ExternalBroker",
    "config",
    "get_broker",
    "get_external",
]
