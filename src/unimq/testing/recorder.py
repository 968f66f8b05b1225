"""``record(broker)``: see what every handler was called with, and how each call ended.

A test asserts on what a handler *did* far more often than on what it was *given*; when it is
the latter, wrapping each handler in a mock is clumsy. :func:`record` adds one handler
middleware to the broker that notes every call — the message, the handler's return value or
exception, and what unimq decided that ending means (``message.outcome``) — across every
subscriber, without touching the handlers::

    calls = unimq.testing.record(broker)
    async with broker:
        await broker.publish("orders.created", order)
        await broker.drain()
    [call] = calls.on("orders.created")
    assert call.json() == order.model_dump() and call.error is None
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..broker import Broker
from ..message import Message


@dataclass
class Call:
    """One handler call: the message (``attempt`` as of this call) and how the call ended."""

    message: Message
    attempt: int
    result: Any = None
    error: BaseException | None = None
    outcome: object | None = None

    @property
    def topic(self) -> str:
        return self.message.topic

    @property
    def group(self) -> str:
        return self.message.group

    def json(self) -> Any:
        """The body decoded as JSON (what a model or dict handler argument was built from)."""
        return json.loads(self.message.body)

    def text(self) -> str:
        return self.message.body.decode()


class Recorder:
    """Every handler call of one broker, in the order the calls ended."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._changed = asyncio.Event()

    def on(self, topic: str, group: str | None = None) -> list[Call]:
        """The calls of ``topic`` (and ``group``, when given)."""
        return [c for c in self.calls if c.topic == topic and (group is None or c.group == group)]

    def __len__(self) -> int:
        return len(self.calls)

    def __iter__(self) -> Any:
        return iter(self.calls)

    async def wait_for(
        self, count: int, *, timeout: float = 5.0, where: Callable[[Call], bool] | None = None
    ) -> list[Call]:
        """Wait until ``count`` calls (matching ``where``) ended; ``TimeoutError`` otherwise."""

        def matching() -> list[Call]:
            return [c for c in self.calls if where is None or where(c)]

        async def wait() -> None:
            while len(matching()) < count:
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(wait(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"expected {count} handler call(s) within {timeout:g}s, got {len(matching())}"
            ) from None
        return matching()

    async def middleware(self, message: Message, call_next: Callable[[], Any]) -> Any:
        call = Call(message, message.attempt)
        try:
            call.result = await call_next()
            return call.result
        except Exception as error:
            call.error = error
            raise
        finally:
            call.outcome = message.outcome
            self.calls.append(call)
            self._changed.set()


def record(broker: Broker) -> Recorder:
    """Record every handler call of ``broker`` (outermost middleware: it sees the handler's
    ending as the other middleware passed it on)."""
    recorder = Recorder()
    broker.middlewares.insert(0, recorder.middleware)
    return recorder
