"""pytest fixtures: ``rabbitmq_broker``, ``kafka_broker``, ``rocketmq_broker``, and the secured
``rabbitmq_secure_broker``, and the 3-node ``kafka_cluster_broker``.

Session-scoped; each starts its broker on first use and removes the container
at the end of the session. The fixture parameter is the broker version (one of
``testcontainers/images/versions.env``; default: the primary, newest one):
``@pytest.mark.parametrize("rabbitmq_broker", ["3.10.8"], indirect=True)``, or
``version_params(kind, every_version=True)``. testcontainers/conftest.py
parametrizes the smoke set with every version (``unimq_brokers.versions``). Import them into a conftest.py::

    from unimq_brokers.fixtures import *  # noqa: F401,F403

Policy when Docker or the image is unavailable (or, in external mode, the URL
is unset): the tests are SKIPPED with the reason, except with ``CI=true``,
where they FAIL with the same message.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from . import BrokerHandle, BrokerUnavailable, config, get_broker, versions

__all__ = [
    "REALBROKER_MARKER",
    "broker_unavailable",
    "kafka_broker",
    "kafka_cluster_broker",
    "kafka_secure_broker",
    "rabbitmq_broker",
    "rabbitmq_cluster_broker",
    "rabbitmq_secure_broker",
    "rocketmq_broker",
    "rocketmq_cluster_broker",
    "rocketmq_secure_broker",
    "shared_broker",
    "started_broker",
    "version_params",
]

REALBROKER_MARKER = (
    "realbroker: needs a real message broker (container started by testcontainers, or external)"
)


def broker_unavailable(message: str) -> None:
    """Skip, or fail when CI=true."""
    if config.is_ci():
        pytest.fail(f"real broker unavailable under CI=true: {message}", pytrace=False)
    pytest.skip(f"real broker unavailable: {message}")


# One broker per (kind, version) per process, even when several conftest.py files import
# these fixtures (each import defines its own session fixture). A broker of the primary
# version lives until the session ends (unparametrized tests use it in any order); another
# version's broker is removed when pytest finishes that parameter's tests (it groups them).
_shared: dict[tuple[str, str], BrokerHandle] = {}


def _release(key: tuple[str, str]) -> None:
    handle = _shared.pop(key, None)
    remove = getattr(handle, "remove", None)
    if remove is not None:
        remove()


def shared_broker(config: pytest.Config, kind: str, version: str | None = None) -> BrokerHandle:
    """The process's broker of ``kind`` (default: the primary version), started on first use.

    For tests outside testcontainers/ that need a real broker without the fixtures (e.g.
    tests/contrib's outbox crash test): they reuse the container the fixtures started on this
    worker instead of starting one of their own. A primary-version broker is removed when the
    session ends; unavailable means skip, or fail under CI=true."""
    version = version or versions.primary(kind)
    key = (kind, version)
    handle = _shared.get(key)
    if handle is None:
        try:
            handle = get_broker(kind, version=version)
        except BrokerUnavailable as e:
            broker_unavailable(str(e))
            raise  # unreachable
        _shared[key] = handle
        if version == versions.primary(kind):
            config.add_cleanup(lambda: _release(key))
    return handle


def started_broker(kind: str, version: str) -> BrokerHandle | None:
    """The process's broker of ``kind`` and ``version`` if one is running, else None (never
    starts one: for hooks that act on a broker the tests already use)."""
    return _shared.get((kind, version))


def _broker(request: pytest.FixtureRequest, kind: str) -> Iterator[BrokerHandle]:
    version = getattr(request, "param", None) or versions.primary(kind)
    key = (kind, version)
    handle = shared_broker(request.config, kind, version)
    try:
        yield handle
    finally:
        if version != versions.primary(kind):
            _release(key)


def version_params(kind: str, every_version: bool) -> list[Any]:
    """``pytest.param`` values for a ``<kind>_broker`` fixture: the versions a test runs on."""
    chosen = versions.matrix(kind) if every_version else [versions.primary(kind)]
    return [pytest.param(v, id=versions.version_id(kind, v)) for v in chosen]


@pytest.fixture(scope="session")
def rabbitmq_broker(request: pytest.FixtureRequest) -> Iterator[BrokerHandle]:
    """RabbitMQ; ``.url`` is ``amqp://guest:guest@127.0.0.1:PORT/``. Parameter: the version
    (default: the primary one)."""
    yield from _broker(request, "rabbitmq")


@pytest.fixture(scope="session")
def kafka_broker(request: pytest.FixtureRequest) -> Iterator[BrokerHandle]:
    """Kafka (single-node KRaft); ``.url`` is ``kafka://127.0.0.1:PORT``. Parameter: the
    version (default: the primary one)."""
    yield from _broker(request, "kafka")


@pytest.fixture(scope="session")
def rocketmq_broker(request: pytest.FixtureRequest) -> Iterator[BrokerHandle]:
    """RocketMQ 5 proxy (gRPC); ``.url`` is ``rocketmq://127.0.0.1:PORT``;
    ``.create_topic(name, message_type)``, ``.create_group(name, orderly=False)``. Parameter:
    the version (default: the primary one)."""
    yield from _broker(request, "rocketmq")


def _secure_broker(request: pytest.FixtureRequest, kind: str) -> Iterator[Any]:
    """A secured broker of ``kind`` (primary version), started once per session. Containers
    only: an external broker's security set-up cannot be known."""
    key = (f"{kind}-secure", versions.primary(kind))
    handle = _shared.get(key)
    if handle is None:
        if config.mode() == "external":
            broker_unavailable(
                f"the secured {kind} broker runs as a container only (UNIMQ_TEST_BROKERS=external)"
            )
        from . import containers

        try:
            client = containers.docker_client()
            containers.remove_orphans(client)
            if kind == "rabbitmq":
                from .rabbitmq_secure import start_rabbitmq_secure

                handle = start_rabbitmq_secure(client, key[1])
            elif kind == "kafka":
                from .secure_kafka import start_secure_kafka

                handle = start_secure_kafka(client, key[1])
            else:
                from .secure_rocketmq import start_secure_rocketmq

                handle = start_secure_rocketmq(client, key[1])
        except BrokerUnavailable as e:
            broker_unavailable(str(e))
            raise  # unreachable
        _shared[key] = handle
        request.config.add_cleanup(lambda: _release(key))
    yield handle


@pytest.fixture(scope="session")
def rabbitmq_secure_broker(request: pytest.FixtureRequest) -> Iterator[Any]:
    """RabbitMQ (primary version) with TLS, passwords, a client-certificate user and
    permissions (``unimq_brokers.rabbitmq_secure.SecureRabbitMQ``): ``.url`` is the ``app``
    user over TLS, ``.amqp_url_for(...)`` any other combination, ``.certs`` the throwaway CA's
    files."""
    yield from _secure_broker(request, "rabbitmq")


@pytest.fixture(scope="session")
def kafka_secure_broker(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Kafka (primary version) with SASL_SSL (SCRAM-SHA-512) and ACLs, beside the plain one:
    ``.url`` connects as the limited user ``app``, ``.admin_url`` as the super user, ``.tls``
    holds the throwaway CA (``unimq_brokers.secure_kafka``)."""
    yield from _secure_broker(request, "kafka")


@pytest.fixture(scope="session")
def rocketmq_secure_broker(request: pytest.FixtureRequest) -> Iterator[Any]:
    """RocketMQ 5 (primary version) with ACL 2.0 and TLS on the proxy's gRPC port: ``.url``
    connects as the limited access key ``app`` (``unimq_brokers.secure_rocketmq``)."""
    yield from _secure_broker(request, "rocketmq")


@pytest.fixture(scope="module")
def kafka_cluster_broker(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A 3-node Kafka KRaft cluster (primary version; RF 3, min ISR 2) on the host network,
    every node on its own 127.0.0.1 ports (``unimq_brokers.cluster_kafka.KafkaCluster``):
    ``.url`` names every node, ``.url_of(node)`` one, ``.kill(node)`` / ``.start(node)``.
    Containers only."""
    key = ("kafka-cluster", versions.primary("kafka"))
    handle = _shared.get(key)
    if handle is None:
        if config.mode() == "external":
            broker_unavailable(
                "the kafka cluster runs as containers only (UNIMQ_TEST_BROKERS=external)"
            )
        from . import containers
        from .cluster_kafka import start_kafka_cluster

        try:
            client = containers.docker_client()
            containers.remove_orphans(client)
            handle = start_kafka_cluster(client, key[1])
        except BrokerUnavailable as e:
            broker_unavailable(str(e))
            raise  # unreachable
        _shared[key] = handle
        request.config.add_cleanup(lambda: _release(key))
    yield handle
    _release(key)  # the end of its module: a cluster is several JVMs or Erlang nodes


@pytest.fixture(scope="module")
def rabbitmq_cluster_broker(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A 3-node RabbitMQ cluster (primary version) on loopback
    (``unimq_brokers.cluster_rabbitmq.RabbitMQCluster``): ``.url`` names every node, ``.nodes``,
    ``.url_of(node)``, ``.kill(node)`` (SIGKILL), ``.start(node)`` (waits until it rejoined),
    ``.stop()``. Containers only."""
    key = ("rabbitmq-cluster", versions.primary("rabbitmq"))
    handle = _shared.get(key)
    if handle is None:
        from .cluster_rabbitmq import get_rabbitmq_cluster

        try:
            handle = get_rabbitmq_cluster(key[1])  # type: ignore[assignment]
        except BrokerUnavailable as e:
            broker_unavailable(str(e))
            raise  # unreachable
        _shared[key] = handle  # type: ignore[assignment]
        request.config.add_cleanup(lambda: _release(key))
    yield handle
    _release(key)  # the end of its module: a cluster is several JVMs or Erlang nodes


@pytest.fixture(scope="module")
def rocketmq_cluster_broker(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A RocketMQ 5 cluster (primary version) on loopback: a name server and two nodes, each
    a master broker with a cluster-mode gRPC proxy (``unimq_brokers.cluster_rocketmq``):
    ``.url`` (both proxies), ``.nodes``, ``.kill(node)``, ``.start(node)``, ``.url_of(node)``,
    ``.namesrv_address``, ``.stop()``. Containers only; under CI=true a cluster that cannot
    start fails the test."""
    key = ("rocketmq-cluster", versions.primary("rocketmq"))
    handle = _shared.get(key)
    if handle is None:
        if config.mode() == "external":
            broker_unavailable("the RocketMQ cluster runs as containers only")
        from . import containers
        from .cluster_rocketmq import start_rocketmq_cluster

        try:
            client = containers.docker_client()
            containers.remove_orphans(client)
            handle = start_rocketmq_cluster(client, key[1])  # type: ignore[assignment]
        except BrokerUnavailable as e:
            broker_unavailable(str(e))
            raise  # unreachable
        _shared[key] = handle  # type: ignore[assignment]
        request.config.add_cleanup(lambda: _release(key))
    yield handle
    _release(key)  # the end of its module: a cluster is several JVMs or Erlang nodes
