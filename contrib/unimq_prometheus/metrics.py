"""The metrics, and how they are fed from unimq's instrumentation seams.

Counts come from the three seams of :mod:`unimq.instrumentation` (handler middleware, publish
middleware, a listener), so they are exact: one increment per event, no sampling. Consumer
lag comes from the transport's optional ``lag()`` (:class:`unimq.transport.SupportsLag`) and
``backlog_age()`` (:class:`unimq.transport.SupportsBacklogAge`),
refreshed every ``lag_interval`` seconds while the broker is connected, and on demand with
:meth:`PrometheusMetrics.refresh_lag`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import start_http_server

from unimq import Broker, Message
from unimq import headers as h
from unimq.instrumentation import Listener, Publish, PublishNext, delivery_delay
from unimq.pipeline import Middleware, Next
from unimq.transport import SupportsBacklogAge, SupportsLag

from .ratelimit import RateLimitMetrics

logger = logging.getLogger("unimq.prometheus")

DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: Publish -> handler start: from "instant" to "an hour late" (a stuck consumer).
DELAY_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class PrometheusMetrics(Listener):
    """Metrics for any number of brokers in one process, in one registry.

    - ``unimq_published_total{topic,kind}``: messages put on the wire; ``kind`` is
      ``publish`` (the application), ``retry``, ``delay``, ``dead-letter`` or ``replay``;
      ``topic`` is the topic written to (the DLQ topic for ``dead-letter``), except that
      retry and delay copies count under their logical topic, not the internal retry topic.
    - ``unimq_handled_total{topic,group}``: handler runs that returned normally.
    - ``unimq_failed_total{topic,group,error_type}``: handler runs that raised (each attempt).
    - ``unimq_retried_total{topic,group}``: failed attempts that will be tried again.
    - ``unimq_dead_lettered_total{topic,group,reason}``: messages sent to the DLQ.
    - ``unimq_handler_duration_seconds{topic,group}``: histogram of handler run time.
    - ``unimq_in_flight{topic,group}``: handler runs in progress.
    - ``unimq_consumer_lag{topic,group}``: messages the group has not consumed yet, as the
      broker reports it (see each backend's docs); absent while the broker cannot tell.
    - ``unimq_consumer_lag_seconds{topic,group}``: age of the oldest message the group has not
      consumed yet (:class:`unimq.transport.SupportsBacklogAge`); absent where unknown.
    - ``unimq_delivery_delay_seconds{topic,group}``: histogram of publish (or due time, for a
      delayed message or a retry) -> handler start, on the broker's clock
      (:func:`unimq.instrumentation.delivery_delay`); messages without a publish time are not
      observed.
    - ``unimq_rate_limit``, ``unimq_rate_limit_current``, ``unimq_rate_limit_starts_total``,
      ``unimq_rate_limit_throttled_seconds_total`` (``{topic,group}``): subscribers with a
      ``rate_limit``: the budget, the rate admitted over the last ``rate_window`` seconds, and
      the time held back (see :mod:`unimq_prometheus.ratelimit`).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        namespace: str = "unimq",
        lag_interval: float | None = 15.0,
        buckets: Iterable[float] = DURATION_BUCKETS,
        delay_buckets: Iterable[float] = DELAY_BUCKETS,
        rate_window: float = 10.0,
    ) -> None:
        self.registry = registry if registry is not None else REGISTRY
        self.lag_interval = lag_interval
        ns = namespace
        reg = self.registry
        self.published_total = Counter(
            f"{ns}_published", "Messages put on the wire", ["topic", "kind"], registry=reg
        )
        self.handled_total = Counter(
            f"{ns}_handled", "Handler runs that succeeded", ["topic", "group"], registry=reg
        )
        self.failed_total = Counter(
            f"{ns}_failed",
            "Handler runs that raised",
            ["topic", "group", "error_type"],
            registry=reg,
        )
        self.retried_total = Counter(
            f"{ns}_retried", "Failed attempts to be retried", ["topic", "group"], registry=reg
        )
        self.dead_lettered_total = Counter(
            f"{ns}_dead_lettered",
            "Messages sent to the dead-letter topic",
            ["topic", "group", "reason"],
            registry=reg,
        )
        self.duration = Histogram(
            f"{ns}_handler_duration_seconds",
            "Handler run time",
            ["topic", "group"],
            buckets=tuple(buckets),
            registry=reg,
        )
        self.in_flight = Gauge(
            f"{ns}_in_flight", "Handler runs in progress", ["topic", "group"], registry=reg
        )
        self.lag = Gauge(
            f"{ns}_consumer_lag",
            "Messages the consumer group has not consumed yet",
            ["topic", "group"],
            registry=reg,
        )
        self.lag_seconds = Gauge(
            f"{ns}_consumer_lag_seconds",
            "Age of the oldest message the consumer group has not consumed yet",
            ["topic", "group"],
            registry=reg,
        )
        self.delivery_delay = Histogram(
            f"{ns}_delivery_delay_seconds",
            "Publish (or due) time to handler start",
            ["topic", "group"],
            buckets=tuple(delay_buckets),
            registry=reg,
        )
        self.rate_limits = RateLimitMetrics(reg, ns, rate_window)
        self._watched: dict[Broker, set[tuple[str, str]]] = {}
        self._lag_tasks: dict[Broker, asyncio.Task[None]] = {}

    # -- wiring -----------------------------------------------------------------------------

    def instrument(self, broker: Broker) -> Broker:
        """Feed this broker's events into the metrics (call before the broker starts)."""
        if broker in self._watched:
            return broker
        self._watched[broker] = set()
        broker.add_middleware(self._handler_middleware(broker.clock.now))
        broker.add_publish_middleware(self._observe_publish)
        broker.add_listener(self)
        return broker

    def watch_lag(self, broker: Broker, topic: str, group: str) -> None:
        """Also report the lag of ``group`` on ``topic`` (beyond the broker's subscribers),
        for example from an operations process that consumes nothing itself."""
        self.instrument(broker)
        self._watched[broker].add((topic, group))

    def serve(self, port: int, addr: str = "127.0.0.1") -> Any:
        """Serve ``/metrics`` over HTTP from a daemon thread; returns the server."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        logger.info("serving Prometheus metrics on http://%s:%d/metrics", addr, port)
        return server

    # -- handler and publish seams ----------------------------------------------------------

    def _handler_middleware(self, now: Callable[[], float]) -> Middleware:
        """The handler middleware of one broker: the delivery delay is read on its clock."""

        async def observe(message: Message, call_next: Next) -> Any:
            delay = delivery_delay(message, now())
            if delay is not None:
                self.delivery_delay.labels(message.topic, message.group).observe(delay)
            return await self._observe_handler(message, call_next)

        return observe

    async def _observe_handler(self, message: Message, call_next: Next) -> Any:
        topic, group = message.topic, message.group
        in_flight = self.in_flight.labels(topic, group)
        in_flight.inc()
        started = time.perf_counter()
        try:
            result = await call_next()
        except Exception as exc:
            self.failed_total.labels(topic, group, type(exc).__name__).inc()
            raise
        else:
            self.handled_total.labels(topic, group).inc()
            return result
        finally:
            self.duration.labels(topic, group).observe(time.perf_counter() - started)
            in_flight.dec()

    async def _observe_publish(self, publish: Publish, call_next: PublishNext) -> None:
        await call_next()
        message = publish.message
        topic = message.headers.get(h.TOPIC, message.topic)
        self.published_total.labels(topic, publish.kind).inc()

    # -- listener ---------------------------------------------------------------------------

    def retried(self, topic: str, group: str, message_id: str, attempt: int, delay: float) -> None:
        self.retried_total.labels(topic, group).inc()

    def dead_lettered(self, topic: str, group: str, message_id: str, reason: str) -> None:
        self.dead_lettered_total.labels(topic, group, reason).inc()

    def rate_limited(self, topic: str, group: str, tokens: int, wait: float, held: float) -> None:
        self.rate_limits.observe(topic, group, tokens, held)

    def broker_connected(self, broker: Broker) -> None:
        self.rate_limits.configure(broker)
        if self.lag_interval is None or not isinstance(broker.transport, SupportsLag):
            return
        task = asyncio.get_running_loop().create_task(
            self._refresh_forever(broker, self.lag_interval), name="unimq-prometheus-lag"
        )
        self._lag_tasks[broker] = task

    def broker_disconnected(self, broker: Broker) -> None:
        task = self._lag_tasks.pop(broker, None)
        if task is not None:
            task.cancel()

    # -- lag --------------------------------------------------------------------------------

    def _lag_pairs(self, broker: Broker) -> set[tuple[str, str]]:
        pairs = {(s.topic, s.group) for s in broker.subscribers if not s.broadcast}
        return pairs | self._watched.get(broker, set())

    async def refresh_lag(self) -> None:
        """Ask every connected broker's transport for the lag of each watched group now."""
        for broker in list(self._watched):
            await self._refresh(broker)

    async def _refresh(self, broker: Broker) -> None:
        transport = broker.transport
        if not isinstance(transport, SupportsLag) or not broker.connected:
            return
        for topic, group in sorted(self._lag_pairs(broker)):
            try:
                value = await asyncio.wait_for(transport.lag(topic, group), 10)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("could not read the lag of %r on %r: %s", group, topic, exc)
                continue
            _set(self.lag, topic, group, value)
            if isinstance(transport, SupportsBacklogAge):
                try:
                    age = await asyncio.wait_for(transport.backlog_age(topic, group), 10)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    logger.warning(
                        "could not read the backlog age of %r on %r: %s", group, topic, exc
                    )
                    continue
                _set(self.lag_seconds, topic, group, age)

    async def _refresh_forever(self, broker: Broker, interval: float) -> None:
        while True:
            await self._refresh(broker)
            await asyncio.sleep(interval)


def _set(gauge: Gauge, topic: str, group: str, value: float | None) -> None:
    """Set the gauge of a group; ``None`` (the broker cannot tell) removes it."""
    if value is None:
        try:
            gauge.remove(topic, group)
        except KeyError:
            pass
    else:
        gauge.labels(topic, group).set(value)
