"""A RocketMQ subscription asks for the topic's route again while a broker it read from is
missing (no broker needed: a stub client).

The client refreshes routes every 30 s on its own; a master that was killed leaves the route and,
restarted, stayed unread until that refresh, so its delayed messages came up to 30 s later than
its outage (issue 15). The subscription now queries the route every
``ROUTE_REFRESH_WHILE_MISSING`` seconds while one of its brokers is gone, and reads the broker
again as soon as the route names it.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("rocketmq")

from unimq_rocketmq import brokers
from unimq_rocketmq.consumer import RocketMQSubscription

from unimq.transport import SubscriptionSpec


class Queue:
    def __init__(self, broker: str) -> None:
        self.broker = broker

    def is_readable(self) -> bool:
        return True

    def is_master_broker(self) -> bool:
        return True

    def message_queue0(self) -> Any:
        return SimpleNamespace(broker=SimpleNamespace(name=self.broker))


class RouteManager:
    """The client's route manager: ``update_topic_route`` asks the proxy, here it reads
    ``proxy_route`` (what the proxy would answer) into the client's cache."""

    def __init__(self, client: StubConsumer) -> None:
        self.client = client
        self.queries = 0

    def update_topic_route(self, topic: str) -> Any:
        self.queries += 1
        self.client.cached = list(self.client.proxy_route)
        return SimpleNamespace(message_queues=self.client.cached)


class StubConsumer:
    """Just what :mod:`unimq_rocketmq.brokers` uses of a ``SimpleConsumer``: a cached route,
    per-broker receives that come back empty after a short long poll."""

    def __init__(self, *names: str) -> None:
        self.cached = [Queue(name) for name in names]
        self.proxy_route = list(self.cached)
        self.client_configuration = SimpleNamespace(request_timeout=3)
        self._Client__route_manager = RouteManager(self)
        self.received_from: list[str] = []

    def _retrieve_topic_route_data(self, topic: str) -> Any:
        return SimpleNamespace(message_queues=self.cached)

    def _receive_req(self, topic: str, queue: Queue, *args: Any) -> Any:
        return queue

    def _receive_async(
        self, queue: Queue, request: Any, timeout: float, future: Future[Any]
    ) -> Any:
        self.received_from.append(queue.broker)
        threading.Timer(0.02, future.set_result, ([],)).start()
        return future

    def shutdown(self) -> None:
        pass


async def _until(condition: Any, seconds: float) -> bool:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return True
        await asyncio.sleep(0.02)
    return bool(condition())


async def test_a_broker_missing_from_the_route_is_looked_for_until_it_returns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(brokers, "ROUTE_REFRESH_WHILE_MISSING", 0.1, raising=False)
    consumer = StubConsumer("broker-a", "broker-b")
    manager = consumer._Client__route_manager
    subscription = RocketMQSubscription(
        consumer,
        lambda: consumer,
        SubscriptionSpec(topic="orders", group="g", prefetch=8),
        invisible_duration=10,
        batch_size=4,
        release_delay=0,
        await_duration=1,
    )
    subscription.start()
    try:
        assert await _until(lambda: {"broker-a", "broker-b"} <= set(consumer.received_from), 2)
        assert manager.queries == 0, "no query while every broker is in the route"

        # broker-a dies: the proxy's route and the client's cache name broker-b only
        consumer.cached = consumer.proxy_route = [Queue("broker-b")]
        assert await _until(lambda: manager.queries >= 3, 2), (
            "the route must be asked for again while a broker is missing"
        )
        asked, t0 = manager.queries, asyncio.get_running_loop().time()
        await asyncio.sleep(0.5)
        elapsed = asyncio.get_running_loop().time() - t0
        assert manager.queries - asked <= elapsed / 0.1 + 1, "at most one query per period"

        # broker-a is back: the proxy names it again, the client's cache does not (yet)
        consumer.proxy_route = [Queue("broker-a"), Queue("broker-b")]
        consumer.received_from.clear()
        assert await _until(lambda: "broker-a" in consumer.received_from, 2), (
            "the returned broker must be read again without the client's 30 s refresh"
        )
        settled = manager.queries
        await asyncio.sleep(0.3)
        assert manager.queries == settled, "no more queries once every broker is back"
    finally:
        await subscription.close()
