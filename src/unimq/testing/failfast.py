"""``fail_fast(broker)``: a handler's exception surfaces in the test instead of being retried.

In production a failing handler is retried with backoff and finally dead-lettered; in a unit
test that turns a plain bug (a ``KeyError`` in the handler) into a timeout with the real
error in a log line. With :func:`fail_fast` the first exception a handler raises is kept, the
message is settled as handled (no retry, no dead letter), and :meth:`FailFast.drain` — or
:meth:`FailFast.check` — raises it in the test, with its original traceback::

    errors = unimq.testing.fail_fast(broker)
    async with broker:
        await broker.publish("orders.created", order)
        await errors.drain()          # raises the handler's KeyError, if it raised one

``RetryLater`` and ``Reject`` are decisions, not bugs: they pass through and keep their
meaning. Use it in tests only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..broker import Broker
from ..errors import DeliveryControl
from ..message import Message


class FailFast:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        #: ``(message, exception)`` for every handler call that raised, in order.
        self.errors: list[tuple[Message, BaseException]] = []

    async def middleware(self, message: Message, call_next: Callable[[], Any]) -> Any:
        try:
            return await call_next()
        except DeliveryControl:
            raise
        except Exception as error:
            self.errors.append((message, error))
            return None  # handled: acked, neither retried nor dead-lettered

    def check(self) -> None:
        """Raise the first handler exception seen so far (once), if any."""
        if self.errors:
            _, error = self.errors.pop(0)
            self.errors.clear()
            raise error

    async def drain(self, timeout: float | None = 10.0) -> None:
        """``broker.drain()``, then :meth:`check`."""
        await self.broker.drain(timeout)
        self.check()


def fail_fast(broker: Broker) -> FailFast:
    """Make ``broker``'s handler exceptions surface in the test (see the module docstring)."""
    guard = FailFast(broker)
    broker.middlewares.insert(0, guard.middleware)
    return guard
