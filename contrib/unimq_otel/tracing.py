"""Producer and consumer spans, and how they are chained across copies of a message.

- ``publish`` (the application) starts a PRODUCER span as a child of whatever span is current
  (a handler publishing from inside its consumer span continues that trace) and writes its
  context into the message headers.
- every copy unimq makes itself (``retry``, ``delay``, ``dead-letter``, ``replay``) starts a
  PRODUCER span as a child of the context *in the message being copied*, then overwrites the
  headers with its own context. So a retry's next attempt hangs under the retry span, which
  hangs under the publish span: publish → attempt 1 → retry → attempt 2 is one trace.
- each handler run (one per attempt) is a CONSUMER span, child of the context in the message;
  an exception is recorded on it and marks it as an error.

Attribute names follow the OpenTelemetry messaging semantic conventions.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import unimq
from unimq import Broker, Message
from unimq import headers as h
from unimq.instrumentation import Publish, PublishNext, delivery_delay
from unimq.pipeline import Next

SYSTEMS = {"amqp": "rabbitmq", "amqps": "rabbitmq", "kafka": "kafka", "rocketmq": "rocketmq"}


class OpenTelemetryTracing:
    """Adds the spans to brokers; ``tracer_provider`` defaults to the global one."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        self.tracer = trace.get_tracer("unimq", unimq.__version__, tracer_provider=tracer_provider)
        self.propagator = propagator or TraceContextTextMapPropagator()

    def instrument(self, broker: Broker) -> Broker:
        system = SYSTEMS.get(broker.url.scheme, broker.url.scheme)

        now = broker.clock.now

        async def consume(message: Message, call_next: Next) -> Any:
            return await self._consume(system, message, call_next, now())

        async def produce(publish: Publish, call_next: PublishNext) -> None:
            await self._produce(system, publish, call_next)

        broker.add_middleware(consume)
        broker.add_publish_middleware(produce)
        return broker

    async def _produce(self, system: str, publish: Publish, call_next: PublishNext) -> None:
        message = publish.message
        headers = message.headers
        parent: Context | None = None
        if publish.kind != "publish":
            parent = self.propagator.extract(headers)
        topic = headers.get(h.TOPIC) or headers.get(h.ORIGINAL_TOPIC) or message.topic
        attributes: dict[str, Any] = {
            "messaging.system": system,
            "messaging.operation.type": "send",
            "messaging.destination.name": message.topic,
            "unimq.publish.kind": publish.kind,
        }
        if message.message_id is not None:
            attributes["messaging.message.id"] = message.message_id
        if message.key is not None:
            attributes["unimq.key"] = message.key
        attempt = headers.get(h.ATTEMPT)
        if attempt is not None:
            attributes["unimq.attempt"] = int(attempt) if attempt.isdigit() else attempt
        name = f"send {topic}" if publish.kind == "publish" else f"{publish.kind} {topic}"
        with self.tracer.start_as_current_span(
            name, context=parent, kind=SpanKind.PRODUCER, attributes=attributes
        ):
            self.propagator.inject(headers)
            await call_next()

    async def _consume(
        self, system: str, message: Message, call_next: Next, started: float | None = None
    ) -> Any:
        parent = self.propagator.extract(message.headers)
        attributes: dict[str, Any] = {
            "messaging.system": system,
            "messaging.operation.type": "process",
            "messaging.destination.name": message.topic,
            "messaging.consumer.group.name": message.group,
            "messaging.message.id": message.id,
            "unimq.attempt": message.attempt,
        }
        if message.key is not None:
            attributes["unimq.key"] = message.key
        delay = None if started is None else delivery_delay(message, started)
        if delay is not None:  # publish (or due) -> handler start, on the broker's clock
            attributes["unimq.delivery.delay_seconds"] = delay
        name = f"process {message.topic}"
        with self.tracer.start_as_current_span(
            name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        ):
            return await call_next()
