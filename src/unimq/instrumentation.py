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
  see: retries (including in-place ones, which publish nothing), dead-lettering, and the
  broker connecting and disconnecting.

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

logger = logging.getLogger("unimq.instrumentation")

PublishKind = Literal["publish", "retry", "delay", "dead-letter", "replay", "reply"]


@dataclass(slots=True)
class Publish:
    """One message on its way to the transport."""

    kind: PublishKind
    message: OutgoingMessage


PublishNext = Callable[[], Awaitable[None]]
PublishMiddleware = Callable[[Publish, PublishNext], Awaitable[None]]


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

    def broker_connected(self, broker: Broker) -> None:
        self._emit("broker_connected", broker)

    def broker_disconnected(self, broker: Broker) -> None:
        self._emit("broker_disconnected", broker)
