"""Prometheus metrics for unimq brokers: ``instrument(broker)`` and a ``/metrics`` endpoint.

::

    from unimq_prometheus import PrometheusMetrics

    metrics = PrometheusMetrics()          # the default prometheus_client registry
    metrics.instrument(broker)             # before ``async with broker``
    metrics.serve(port=9464)               # http://127.0.0.1:9464/metrics

``unimq run --metrics-port 9464 app:broker`` does the same from the command line. See
docs/operations.md for the metric names and what to alert on.


``OutboxMetrics(outbox).register()`` adds the transactional outbox's backlog, oldest age and
relayed count (see :mod:`unimq_prometheus.outbox`).
"""

from .metrics import PrometheusMetrics
from .outbox import OutboxMetrics

__all__ = ["OutboxMetrics", "PrometheusMetrics"]
