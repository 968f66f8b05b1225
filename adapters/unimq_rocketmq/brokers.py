"""Receive from each master broker separately: one long poll in flight per broker.

The client's ``SimpleConsumer.receive`` picks the next queue of the topic's route round-robin,
so a subscription with one receive in flight alternates between the brokers. When one broker is
empty and another holds a backlog, every other receive is an empty long poll that waits
``await_duration`` and the backlog drains at one batch per long poll. That is exactly the state
after a master of a cluster was down and restarted: the other master is drained, the restarted
one holds everything published to it before it died, its delayed messages (put into its queues
by its timer when it is back) and its unacked deliveries (revived by it). Measured on the
two-broker test cluster: about 4 messages/s, so its delayed messages arrived 5-7 minutes late
after a 37 s outage (issue 15). Asking each broker on its own drains every broker at full speed
whatever the others hold.

A broker that died leaves the topic's route (the proxy drops it within its route refresh), and
comes back to it when restarted; but the client asks for routes every 30 s only, so a restarted
master stayed unread for up to 30 s more than its outage, with its delayed messages falling
due behind it (measured: lateness up to 30 s beyond outage plus queueing, issue 15). While a
broker the subscription has read from is missing, :func:`refresh_route` asks for the route
every :data:`ROUTE_REFRESH_WHILE_MISSING` seconds instead.

The client has no public call for "receive from this broker" or "refresh this route": this uses
its protected ``_retrieve_topic_route_data``, ``_receive_req`` and ``_receive_async`` and its
route manager's ``update_topic_route`` (rocketmq-python-client 5.x). Without them
:func:`broker_queues` returns nothing and the caller falls back to the public round-robin
``receive_async``; :func:`refresh_route` does nothing and the client's own 30 s refresh remains.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

_NEEDED = ("_retrieve_topic_route_data", "_receive_req", "_receive_async", "client_configuration")

#: Seconds between route queries while a broker the subscription read from is missing from the
#: route (the client's own period is 30 s).
ROUTE_REFRESH_WHILE_MISSING = 2.0


def broker_queues(consumer: Any, topic: str) -> list[Any]:
    """One readable master queue per broker of ``topic``'s current route (the client's cached
    route, refreshed by the client every 30 s), ordered by broker name; ``[]`` when unknown."""
    if not all(hasattr(consumer, name) for name in _NEEDED):
        return []
    try:
        queues = consumer._retrieve_topic_route_data(topic).message_queues
        first: dict[str, Any] = {}
        for queue in queues:
            if queue.is_readable() and queue.is_master_broker():
                first.setdefault(queue.message_queue0().broker.name, queue)
    except Exception:  # no route yet (broker starting): the caller retries
        return []
    return [first[name] for name in sorted(first)]


def receive_from(
    consumer: Any, topic: str, queue: Any, max_n: int, invisible: int, await_duration: int
) -> Future[Any]:
    """``consumer.receive_async`` aimed at ``queue``'s broker (the proxy pops any queue of that
    broker): a ``concurrent.futures.Future`` of the received messages."""
    request = consumer._receive_req(topic, queue, max_n, False, invisible, await_duration)
    timeout = consumer.client_configuration.request_timeout + await_duration
    future: Future[Any] = consumer._receive_async(queue, request, timeout, Future())
    return future


def refresh_route(consumer: Any, topic: str) -> bool:
    """Ask the proxy for ``topic``'s route now and cache it in ``consumer`` (blocking, at most the
    client's ``request_timeout``: run it in a worker thread). ``False`` when this client has no
    route manager to ask or the query failed (the client's own periodic refresh remains)."""
    manager = getattr(consumer, "_Client__route_manager", None)
    update = getattr(manager, "update_topic_route", None)
    if update is None:
        return False
    try:
        return update(topic) is not None
    except Exception:  # proxy unreachable right now: the next refresh tries again
        return False
