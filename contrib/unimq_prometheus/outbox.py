"""Prometheus metrics of a transactional outbox (``unimq_sql.SQLOutbox``).

Read at scrape time from the outbox's running relay (no extra database query per scrape: the
relay refreshes the outbox status every few seconds)::

    from unimq_prometheus import OutboxMetrics

    OutboxMetrics(outbox).register()       # the default prometheus_client registry

- ``unimq_outbox_backlog{table}``: committed rows not yet relayed.
- ``unimq_outbox_oldest_age_seconds{table}``: age of the oldest of them (0 when none); alert
  when it grows: the relay is down, or cannot keep up.
- ``unimq_outbox_relayed_total{table}``: rows relayed by this process's relay.
- ``unimq_outbox_failed_total{table}``: rows this relay gave up on (the broker refused them
  for good; ``unimq outbox status`` counts them in the table). Alert on any increase.

Nothing is reported while the outbox has no relay running in this process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class OutboxMetrics(Collector):
    """A collector for one outbox (any object with ``.relay`` and ``.table.name``)."""

    def __init__(self, outbox: Any, namespace: str = "unimq") -> None:
        self.outbox = outbox
        self.namespace = namespace

    def register(self, registry: CollectorRegistry | None = None) -> OutboxMetrics:
        (REGISTRY if registry is None else registry).register(self)
        return self

    def describe(self) -> Iterator[Any]:
        return iter(())  # the families depend on the relay running: collect them at scrape

    def collect(self) -> Iterator[Any]:
        relay = self.outbox.relay
        if relay is None:
            return
        table = self.outbox.table.name
        ns = self.namespace
        status = relay.last_status
        if status is not None:
            backlog = GaugeMetricFamily(
                f"{ns}_outbox_backlog", "Outbox rows not yet relayed", labels=["table"]
            )
            backlog.add_metric([table], status.pending)
            yield backlog
            age = GaugeMetricFamily(
                f"{ns}_outbox_oldest_age_seconds",
                "Age of the oldest outbox row not yet relayed",
                labels=["table"],
            )
            age.add_metric([table], status.oldest_age or 0.0)
            yield age
        relayed = CounterMetricFamily(
            f"{ns}_outbox_relayed", "Outbox rows relayed by this process", labels=["table"]
        )
        relayed.add_metric([table], relay.relayed)
        yield relayed
        failed = CounterMetricFamily(
            f"{ns}_outbox_failed", "Outbox rows given up on by this process", labels=["table"]
        )
        failed.add_metric([table], relay.failed)
        yield failed
