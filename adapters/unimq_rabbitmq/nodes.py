"""Several RabbitMQ nodes in one URL: ``amqp://user:pass@h1:5672,h2:5672,h3:5672/vhost``.

A RabbitMQ cluster has no bootstrap protocol: a client talks to one node, and when that node
dies its connection is gone. aio-pika's robust connection reconnects, but to the one URL it was
given, so a client of a dead node would wait for that node to come back. :class:`FailoverConnection`
keeps aio-pika's recovery (channels, QoS, queues, bindings and consumers restored after a
reconnect) and changes only where it reconnects to: every lost connection and every failed
reconnect attempt moves to the next node of the URL (round robin), so the client reaches a
live node within one ``reconnect_interval`` per dead node.

The first connect tries the nodes in URL order and takes the first that answers; a node that
is unreachable is skipped, but an answer that would be the same on every node (wrong password,
no such virtual host, a TLS certificate problem) ends the attempt at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aio_pika
import aiormq
from yarl import URL

from unimq.url import BrokerURL

from .options import DEFAULT_PORT

logger = logging.getLogger("unimq.rabbitmq")

Node = tuple[str, int]


def nodes_of(url: BrokerURL) -> tuple[Node, ...]:
    """Every ``(host, port)`` of ``url``, in URL order; the scheme's port where none is given."""
    default = DEFAULT_PORT.get(url.scheme, 5672)
    nodes = tuple((item.host, item.port or default) for item in url.hosts)
    return nodes or (("localhost", default),)


def _show(node: Node) -> str:
    host, port = node
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class FailoverConnection(aio_pika.RobustConnection):
    """aio-pika's robust connection that reconnects to the next node after each failure.

    aio-pika calls :meth:`_on_connection_close` both when an open connection is lost and when
    a (re)connect attempt fails, before it retries; moving ``url`` to the next node there is
    the one change needed, everything else (recovery, back-off) stays aio-pika's.
    """

    def __init__(self, url: URL, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any):
        super().__init__(url, loop=loop, **kwargs)
        self.nodes: tuple[Node, ...] = ((self.url.host or "localhost", self.url.port or 5672),)
        self.node_index = 0

    def use_nodes(self, nodes: Sequence[Node], index: int) -> None:
        """Fail over among ``nodes``; the connection is open to ``nodes[index]``."""
        self.nodes = tuple(nodes)
        self.node_index = index

    @property
    def node(self) -> Node:
        """The node the connection is open to (or the next attempt goes to)."""
        return self.nodes[self.node_index]

    def next_node(self) -> Node:
        """Point the next (re)connect attempt at the next node of the list."""
        self.node_index = (self.node_index + 1) % len(self.nodes)
        host, port = self.nodes[self.node_index]
        self.url = self.url.with_host(host).with_port(port)
        return self.nodes[self.node_index]

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        # Before aio-pika's own handler: it wakes the reconnect loop, which reads self.url.
        if len(self.nodes) > 1 and not (self._close_called or self.is_closed):
            lost = self.node
            logger.info(
                "RabbitMQ node %s: connection lost or refused; the next attempt goes to %s",
                _show(lost),
                _show(self.next_node()),
            )
        await super()._on_connection_close(closing)


async def connect_first(
    nodes: Sequence[Node],
    kwargs: Mapping[str, Any],
    try_next: Callable[[BaseException], bool],
) -> FailoverConnection:
    """Open a robust connection to the first node of ``nodes`` that accepts one.

    A failure for which ``try_next`` is false (the same answer would come from every node) is
    raised at once; when every node failed, the last node's failure is raised.
    """
    for index, node in enumerate(nodes):
        host, port = node
        try:
            connection = await aio_pika.connect_robust(
                host=host, port=port, connection_class=FailoverConnection, **kwargs
            )
        except (aiormq.exceptions.AMQPError, OSError) as exc:
            if index == len(nodes) - 1 or not try_next(exc):
                raise
            logger.warning(
                "cannot connect to RabbitMQ node %s (%s); trying %s",
                _show(node),
                type(exc).__name__,
                _show(nodes[index + 1]),
            )
            continue
        assert isinstance(connection, FailoverConnection)
        connection.use_nodes(nodes, index)
        return connection
    raise AssertionError("nodes is never empty")  # pragma: no cover
