"""Prometheus metrics of subscribers' rate limits (``rate_limit=unimq.RateLimit(...)``).

Fed by the ``rate_limited`` listener event (one per admission: a handler start, or a batch)
and the subscribers' configuration:

- ``unimq_rate_limit{topic,group}``: the configured budget, in handler starts per second
  (``rate / per``; for a shared budget, the budget of all instances together).
- ``unimq_rate_limit_current{topic,group}``: handler starts per second that this process's
  subscriber admitted over the last ``rate_window`` seconds (10 by default). Compare it with
  ``unimq_rate_limit``: equal means the limit is what holds consumption back.
- ``unimq_rate_limit_starts_total{topic,group}``: handler starts admitted (a batch counts its
  messages); ``rate()`` of it is the same figure over any window.
- ``unimq_rate_limit_throttled_seconds_total{topic,group}``: time this process's subscriber
  was held back by its rate limit (wall time during which at least one handler start was
  waiting for tokens; concurrent waits count once). ``rate()`` of it near 1 means the limit is
  throttling all the time; near 0, it is not in the way.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from unimq import Broker

Key = tuple[str, str]


class _Recent:
    """Starts per whole second of the last ``window`` seconds (a ring, not one entry per
    start, so a fast subscriber costs no memory)."""

    __slots__ = ("seconds",)

    def __init__(self) -> None:
        self.seconds: deque[list[int]] = deque()  # [second, starts]

    def add(self, second: int, starts: int, window: int) -> None:
        if self.seconds and self.seconds[-1][0] == second:
            self.seconds[-1][1] += starts
        else:
            self.seconds.append([second, starts])
        while self.seconds and self.seconds[0][0] <= second - window:
            self.seconds.popleft()

    def total(self, since: float) -> int:
        return sum(starts for second, starts in self.seconds if second >= since)


class RateLimitMetrics(Collector):
    """The rate-limit metrics of :class:`~unimq_prometheus.PrometheusMetrics` (which owns one)."""

    def __init__(self, registry: CollectorRegistry, namespace: str, window: float) -> None:
        if not window >= 1:
            raise ValueError(f"rate_window must be at least 1 second, got {window!r}")
        self.window = float(window)
        self._name = f"{namespace}_rate_limit_current"
        labels = ["topic", "group"]
        self.limit = Gauge(
            f"{namespace}_rate_limit",
            "Configured rate limit, handler starts per second",
            labels,
            registry=registry,
        )
        self.starts = Counter(
            f"{namespace}_rate_limit_starts",
            "Handler starts admitted by the rate limit",
            labels,
            registry=registry,
        )
        self.throttled = Counter(
            f"{namespace}_rate_limit_throttled_seconds",
            "Time the subscriber was held back by its rate limit",
            labels,
            registry=registry,
        )
        self._lock = threading.Lock()  # scrapes run on the HTTP server's thread
        self._recent: dict[Key, _Recent] = {}
        registry.register(self)

    def configure(self, broker: Broker) -> None:
        for subscriber in broker.subscribers:
            limit = subscriber.rate_limit
            if limit is not None:
                self.limit.labels(subscriber.topic, subscriber.group).set(limit.per_second)

    def observe(self, topic: str, group: str, tokens: int, held: float) -> None:
        self.starts.labels(topic, group).inc(tokens)
        if held > 0:
            self.throttled.labels(topic, group).inc(held)
        now = int(time.monotonic())
        with self._lock:
            recent = self._recent.get((topic, group))
            if recent is None:
                recent = self._recent[(topic, group)] = _Recent()
            recent.add(now, tokens, int(self.window) + 1)

    def describe(self) -> Iterator[Any]:
        yield GaugeMetricFamily(self._name, "", labels=["topic", "group"])

    def collect(self) -> Iterator[Any]:
        family = GaugeMetricFamily(
            self._name,
            "Handler starts per second admitted by the rate limit, over the last window",
            labels=["topic", "group"],
        )
        since = time.monotonic() - self.window
        with self._lock:
            for (topic, group), recent in sorted(self._recent.items()):
                family.add_metric([topic, group], recent.total(since) / self.window)
        yield family
