"""Seams for instrumentation plugins (metrics, tracing): what they can see and change.

Three seams, each free when unused:

- **handler middleware** (``broker.add_middleware``): ``async def mw(message, call_next)``
  wraps every handler call (one per attempt): duration, in-flight, failures, a consumer span.
- **publish middleware** (``broker.add_publish_middleware``): ``async def mw(publish,
  call_next)`` wraps every message unimq puts on the wire, with :attr:`Publish.kind` telling
  why: ``"publish"`` (the application), ``"retry"``, ``"delay"`` (a re-hop of a long delay),
  ``"dead-letter"``, ``"replay"`` (``unimq dlq replay``) and ``"reply"`` (a handler's
  answer to ``Broker.request``). ``publish.message.headers`` may
  be changed before ``call_next()`` (for example to add ``traceparent``).
- **listeners** (``broker.add_listener``): a :class:`Listener` hears what middleware cannot
  see: retries (including in-place ones, which publish nothing), dead-lettering, rate-limit
  waits, and the broker connecting and disconnecting.

Listeners run on the event loop, synchronously: keep them quick. An exception in a listener
is logged and swallowed, never allowed to disturb delivery.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .transport import OutgoingMessage

if TYPE_CHECKING:
    from .broker import Broker
    from .message import Message

logger = logging.getLogger("unimq.instrumentation")

PublishKind = Literal["publish", "retry", "delay", "dead-letter", "replay", "reply"]


@dataclass(slots=True)
class Publish:
    """One message on its way to the transport."""

    kind: PublishKind
    message: OutgoingMessage


PublishNext = Callable[[], Awaitable[None]]
PublishMiddleware = Callable[[Publish, PublishNext], Awaitable[None]]


def delivery_delay(message: Message, now: float) -> float | None:
    """Seconds from when ``message`` could first be handled to ``now`` (a handler start):
    from its publish time, or from its due time when that is later (a delayed message, a
    retry), so a delay asked for is not counted as lateness. ``None`` when the publish time is
    unknown (a message from another client on a broker without timestamps)."""
    start = message.published_at
    due = message.due
    if due is not None and (start is None or due > start):
        start = due
    return None if start is None else max(0.0, now - start)


class Listener:
    """Override the events you need; the defaults do nothing.

    ``topic`` is the logical topic (not a retry topic), ``group`` the consumer group.
    """

    def broker_connected(self, broker: Broker) -> None:
        """The broker connected (its subscribers, if any, start right after)."""

    def broker_disconnected(self, broker: Broker) -> None:
        """The broker stopped its subscribers and disconnected."""

    def retried(self, topic: str, group: str, message_id: str, attempt: int, delay: float) -> None:
        """Attempt ``attempt`` failed and the message will be tried again after ``delay`` s."""

    def dead_lettered(self, topic: str, group: str, message_id: str, reason: str) -> None:
        """The message's dead-letter copy is durable (or, with ``dead_letter=False``, it was
        dropped); ``reason`` as in ``unimq-dlq-reason``."""

    def rate_limited(self, topic: str, group: str, tokens: int, wait: float, held: float) -> None:
        """``tokens`` handler starts took their tokens from the subscriber's ``rate_limit`` and
        wait ``wait`` s before starting (0: none). ``held`` is what this adds to the time the
        subscriber was held back (overlapping waits of concurrent workers counted once)."""


class Listeners(list[Listener]):
    """The broker's listeners; each event goes to every one, and a failing one is logged."""

    def _emit(self, event: str, *args: Any) -> None:
        for listener in self:
            try:
                getattr(listener, event)(*args)
            except Exception:
                logger.exception("listener %r failed on %r", listener, event)

    def retried(self, topic: str, group: str, message_id: str, attempt: int, delay: float) -> None:
        self._emit("retried", topic, group, message_id, attempt, delay)

    def dead_lettered(self, topic: str, group: str, message_id: str, reason: str) -> None:
        self._emit("dead_lettered", topic, group, message_id, reason)

    def rate_limited(self, topic: str, group: str, tokens: int, wait: float, held: float) -> None:
        self._emit("rate_limited", topic, group, tokens, wait, held)

    def broker_connected(self, broker: Broker) -> None:
        self._emit("broker_connected", broker)

    def broker_disconnected(self, broker: Broker) -> None:
        self._emit("broker_disconnected", broker)
