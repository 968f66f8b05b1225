"""OpenTelemetry tracing for unimq: a producer span per publish, a consumer span per delivery.

::

    from unimq_otel import OpenTelemetryTracing

    OpenTelemetryTracing().instrument(broker)   # uses the global tracer provider

Spans are linked through W3C trace-context headers (``traceparent``/``tracestate``) carried
in the message, and those headers travel with every copy unimq makes (retries, delay re-hops,
the dead-letter copy, a replay), so one message's whole life is one trace.
"""

from .tracing import OpenTelemetryTracing

__all__ = ["OpenTelemetryTracing"]
