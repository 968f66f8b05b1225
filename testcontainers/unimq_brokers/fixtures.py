"""pytest fixtures: ``rabbitmq_broker``, ``kafka_broker``, ``rocketmq_broker``.

Session-scoped; each starts its broker on first use and removes the container
at the end of the session. Import them into a conftest.py::

    from unimq_brokers.fixtures import *  # noqa: F401,F403

Policy when Docker or the image is unavailable (or, in external mode, the URL
is unset): the tests are SKIPPED with the reason, except with ``CI=true``,
where they FAIL with the same message.
"""

from __future__ import annotations

import pytest

from . import BrokerHandle, BrokerUnavailable, config, get_broker

__all__ = [
    "REALBROKER_MARKER",
    "broker_unavailable",
    "kafka_broker",
    "rabbitmq_broker",
    "rocketmq_broker",
]

REALBROKER_MARKER = (
    "realbroker: needs a real message broker (container started by testcontainers, or external)"
)


def broker_unavailable(message: str) -> None:
    """Skip, or fail when CI=true."""
    if config.is_ci():
        pytest.fail(f"real broker unavailable under CI=true: {message}", pytrace=False)
    pytest.skip(f"real broker unavailable: {message}")


# One broker per kind per process, even when several conftest.py files import
# these fixtures (each import defines its own session fixture): the first user
# starts it, the last one to finish removes it.
_shared: dict[str, list] = {}  # kind -> [handle, users]


def _broker(kind: str):
    entry = _shared.get(kind)
    if entry is None:
        try:
            handle = get_broker(kind)
        except BrokerUnavailable as e:
            broker_unavailable(str(e))
            raise  # unreachable
        entry = _shared[kind] = [handle, 0]
    entry[1] += 1
    try:
        yield entry[0]
    finally:
        entry[1] -= 1
        if entry[1] == 0:
            _shared.pop(kind, None)
            remove = getattr(entry[0], "remove", None)
            if remove is not None:
                remove()


@pytest.fixture(scope="session")
def rabbitmq_broker() -> BrokerHandle:
    """RabbitMQ; ``.url`` is ``amqp://guest:guest@127.0.0.1:PORT/``."""
    yield from _broker("rabbitmq")


@pytest.fixture(scope="session")
def kafka_broker() -> BrokerHandle:
    """Kafka (single-node KRaft); ``.url`` is ``kafka://127.0.0.1:PORT``."""
    yield from _broker("kafka")


@pytest.fixture(scope="session")
def rocketmq_broker() -> BrokerHandle:
    """RocketMQ 5 proxy (gRPC); ``.url`` is ``rocketmq://127.0.0.1:PORT``;
    ``.create_topic(name, message_type)``, ``.create_group(name, orderly=False)``."""
    yield from _broker("rocketmq")
