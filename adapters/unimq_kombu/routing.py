"""Where a published message goes: every group queue of its topic, or the holding queue.

Runs on a connection thread (kombu calls block). Redis: a direct exchange per topic whose
bindings kombu keeps in Redis, so every process sees the same groups; the adapter reads the
bindings and sends a copy to each queue by name (see :meth:`Router.bound_queues`). SQS:
kombu keeps exchange bindings in the process only, so the adapter lists the topic's queues
by their name prefix and sends a copy to each.
"""

from __future__ import annotations

from typing import Any

from . import names
from .connect import load_kombu


class Router:
    def __init__(self, channel: Any, sqs: bool) -> None:
        self.channel = channel
        self.sqs = sqs

    def exchange(self, topic: str) -> Any:
        kombu = load_kombu()

        exchange = kombu.Exchange(names.exchange_name(topic), "direct", durable=True)
        exchange(self.channel).declare()
        return exchange

    def declare_group_queue(self, topic: str, group: str, temporary: bool) -> Any:
        kombu = load_kombu()

        name = names.group_queue(topic, group, self.sqs)
        if self.sqs:
            queue = kombu.Queue(name, routing_key=name)
        else:
            queue = kombu.Queue(
                name, self.exchange(topic), routing_key=topic, durable=True, auto_delete=temporary
            )
        queue(self.channel).declare()
        return queue

    def targets(self, topic: str) -> list[tuple[Any, str]]:
        """``(exchange, routing_key)`` pairs to publish one message of ``topic`` to."""
        if self.sqs:
            queues = self.sqs_queues(topic)
            if not queues:
                holding = names.holding_queue(topic, True)
                self.channel.queue_declare(holding)
                queues = [holding]
            return [("", queue) for queue in queues]
        queues = self.bound_queues(topic)
        if not queues:
            self.bind_holding(topic)
            queues = [names.holding_queue(topic, False)]
        return [("", queue) for queue in queues]

    def bound_queues(self, topic: str) -> list[str]:
        """The queues bound to the topic's exchange (kombu keeps the table in Redis).

        The adapter sends to each queue by name instead of through the exchange: kombu
        restores an unacked message (a dead consumer, a requeue) through the exchange and
        routing key it was published with, which would copy it into every *other* group's
        queue as well. Sent by queue name, it goes back to its own queue only.
        """
        table = self.channel.get_table(names.exchange_name(topic))
        holding = names.holding_queue(topic, False)
        queues = {queue for _key, _pattern, queue in table}
        groups = sorted(queues - {holding})
        return groups or sorted(queues)

    def bind_holding(self, topic: str) -> None:
        kombu = load_kombu()

        queue = kombu.Queue(
            names.holding_queue(topic, False), self.exchange(topic), routing_key=topic, durable=True
        )
        queue(self.channel).declare()

    def sqs_names(self, topic: str) -> list[str]:
        """Every queue of ``topic`` on SQS (its groups', and the holding queue if any)."""
        prefix = names.sqs_topic_prefix(topic)
        reply = self.channel.sqs().list_queues(QueueNamePrefix=prefix, MaxResults=1000)
        return [url.rsplit("/", 1)[-1] for url in reply.get("QueueUrls", [])]

    def sqs_queues(self, topic: str) -> list[str]:
        """The queues a message of ``topic`` goes to: its groups', else the holding queue."""
        prefix = names.sqs_topic_prefix(topic)
        found = self.sqs_names(topic)
        groups = [name for name in found if name.startswith(prefix) and not name.endswith("_hold")]
        return groups or [name for name in found if name.endswith("_hold")]
