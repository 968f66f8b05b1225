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

from . import config, versions
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


def get_broker(kind: str, client=None, version: str | None = None) -> BrokerHandle:
    """Start (or look up) a broker of ``kind`` and return its ready handle.

    ``version`` is one of ``kind``'s versions in testcontainers/images/versions.env
    (default: the primary, newest one); external mode has one broker per kind and takes
    no version. Raises BrokerUnavailable when Docker/the image/the external URL is missing.
    Container handles must be released with ``handle.remove()``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown broker kind {kind!r}")
    primary = versions.primary(kind)
    if config.mode() == "external":
        if version not in (None, primary):
            raise BrokerUnavailable(
                f"external mode has one {kind} broker; version {version} cannot be chosen"
            )
        return get_external(kind)
    known = versions.all_versions(kind)
    if version is not None and version not in known:
        raise ValueError(f"{kind} version {version!r} is not in versions.env ({', '.join(known)})")
    from . import containers

    client = client or containers.docker_client()
    containers.remove_orphans(client)
    v = version or primary
    return containers.STARTERS[kind](client, v, primary=v == primary)


__all__ = [
    "KINDS",
    "BrokerControlUnsupported",
    "BrokerHandle",
    "BrokerUnavailable",
    "ExternalBroker",
    "config",
    "get_broker",
    "get_external",
    "versions",
]
