"""Several RabbitMQ nodes in one URL, without a broker: which node the first connect and each
reconnect goes to (``unimq_rabbitmq.nodes``). A real cluster losing the node the clients are
connected to: testcontainers/tests/test_cluster_rabbitmq.py."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiormq
import pytest
from unimq_rabbitmq import nodes
from unimq_rabbitmq.nodes import FailoverConnection
from yarl import URL

from unimq import Broker
from unimq.errors import AuthenticationError, ConnectionFailedError
from unimq.url import BrokerURL


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, read, released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_every_host_of_the_url_is_a_node_with_the_schemes_port() -> None:
    url = BrokerURL.parse("amqp://u:p@h1:5673,h2,h3:5675/vh")
    assert nodes.nodes_of(url) == (("h1", 5673), ("h2", 5672), ("h3", 5675))
    assert nodes.nodes_of(BrokerURL.parse("amqps://h1,h2/")) == (("h1", 5671), ("h2", 5671))


async def test_each_lost_connection_moves_to_the_next_node_round_robin() -> None:
    connection = FailoverConnection(URL("amqp://u:secret@h1:1/vh?reconnect_interval=1"))
    connection.use_nodes([("h1", 1), ("h2", 2), ("h3", 3)], 0)
    seen = []
    for _ in range(4):
        lost: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        lost.set_exception(ConnectionResetError("node died"))
        await connection._on_connection_close(lost)
        seen.append((connection.url.host, connection.url.port))
    assert seen == [("h2", 2), ("h3", 3), ("h1", 1), ("h2", 2)]
    # the rest of the URL (credentials, vhost, aio-pika's parameters) stays
    assert connection.url.user == "u" and connection.url.password == "secret"
    assert connection.url.path == "/vh" and connection.url.query["reconnect_interval"] == "1"


async def test_aio_pikas_reconnect_loop_tries_each_node_in_turn() -> None:
    """The contract :class:`FailoverConnection` relies on: aio-pika reports a failed reconnect
    attempt through ``_on_connection_close`` before the next one, so the attempts go round the
    nodes (here three loopback ports nothing listens on)."""
    ports = [_closed_port() for _ in range(3)]
    url = URL(f"amqp://127.0.0.1:{ports[0]}/?reconnect_interval=0.05&fail_fast=0")
    connection = FailoverConnection(url)
    connection.use_nodes([("127.0.0.1", p) for p in ports], 0)
    attempted: list[int] = []
    original = connection.next_node

    def next_node() -> tuple[str, int]:
        attempted.append(connection.url.port or 0)
        return original()

    connection.next_node = next_node  # type: ignore[method-assign]
    connecting = asyncio.create_task(connection.connect())
    try:
        for _ in range(200):
            if len(attempted) >= 4:
                break
            await asyncio.sleep(0.05)
    finally:
        connecting.cancel()
        await connection.close()
    assert attempted[:4] == [*ports, ports[0]]


async def test_a_closed_connection_stays_where_it_was() -> None:
    connection = FailoverConnection(URL("amqp://h1:1/"))
    connection.use_nodes([("h1", 1), ("h2", 2)], 0)
    await connection.close()
    closing: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    closing.set_result(None)
    await connection._on_connection_close(closing)
    assert connection.node == ("h1", 1) and connection.url.port == 1


async def test_first_connect_skips_unreachable_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    tried: list[tuple[str, int]] = []

    async def connect_robust(*, host: str, port: int, **kwargs: Any) -> FailoverConnection:
        tried.append((host, port))
        if host != "h3":
            raise ConnectionRefusedError(111, "refused")
        return FailoverConnection(URL(f"amqp://{host}:{port}/"))

    monkeypatch.setattr(nodes.aio_pika, "connect_robust", connect_robust)
    connection = await nodes.connect_first([("h1", 1), ("h2", 2), ("h3", 3)], {}, lambda exc: True)
    assert tried == [("h1", 1), ("h2", 2), ("h3", 3)]
    assert connection.node == ("h3", 3) and connection.nodes[0] == ("h1", 1)


async def test_an_answer_every_node_would_give_ends_the_first_connect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tried: list[str] = []

    async def connect_robust(*, host: str, port: int, **kwargs: Any) -> FailoverConnection:
        tried.append(host)
        raise aiormq.exceptions.ProbableAuthenticationError("ACCESS_REFUSED")

    monkeypatch.setattr(nodes.aio_pika, "connect_robust", connect_robust)
    with pytest.raises(aiormq.exceptions.ProbableAuthenticationError):
        await nodes.connect_first([("h1", 1), ("h2", 2)], {}, lambda exc: False)
    assert tried == ["h1"]


async def test_no_node_reachable_is_a_connection_error_without_the_password() -> None:
    a, b = _closed_port(), _closed_port()
    broker = Broker(f"amqp://u:pw-Secret9@127.0.0.1:{a},127.0.0.1:{b}/", reconnect_interval=0.1)
    with pytest.raises(ConnectionFailedError) as failed:
        await asyncio.wait_for(broker.connect(), 30)
    text = f"{failed.value} {failed.value!r}"
    assert f"127.0.0.1:{a},127.0.0.1:{b}" in text and "Secret9" not in text
    assert not isinstance(failed.value, AuthenticationError)
