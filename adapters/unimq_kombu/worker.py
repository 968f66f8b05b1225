"""One thread per kombu connection: kombu is synchronous and its connections are not
thread-safe, so every call on a connection runs on the thread that owns it, and the event
loop only awaits the result.

The thread runs submitted calls in order. When it has nothing to run it calls ``idle`` (a
consumer's ``drain_events`` with a short timeout, or the delay mover), so a consumer thread
hands out deliveries and runs acks without ever blocking the loop.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

logger = logging.getLogger("unimq.kombu")

T = TypeVar("T")
Idle = Callable[[], "bool | None"]
_STOP = object()
_WAKE = object()  # no call: makes the thread look at its idle step again at once


class ConnectionThread:
    """A daemon thread that owns one kombu connection and runs calls on it in order."""

    def __init__(self, name: str, idle: Idle | None = None, poll: float = 0.05):
        """``idle`` either blocks for up to ``poll`` itself (``drain_events``: then pass
        ``idle_blocks=True`` to :meth:`set_idle`) or returns at once (then the thread waits
        ``poll`` for calls before it runs ``idle`` again). A blocking ``idle`` that returns
        ``False`` had nothing to wait for (a consumer whose prefetch window is full): the
        thread then waits up to ``poll`` for calls, so the acks that reopen the window run
        as soon as they are submitted."""
        self._calls: queue.Queue[Any] = queue.Queue()
        self._idle = idle
        self._idle_blocks = False
        self._poll = poll
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False

    def start(self) -> None:
        self._thread.start()

    @property
    def closed(self) -> bool:
        return self._closed

    def set_idle(self, idle: Idle | None, idle_blocks: bool = False) -> None:
        """Set the idle step; the thread starts on it at once, not after a ``poll`` wait."""
        self._idle = idle
        self._idle_blocks = idle_blocks
        if not self._closed:
            self._calls.put(_WAKE)

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the thread and return its result (or raise its exception)."""
        if self._closed:
            raise RuntimeError("the kombu connection thread is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._calls.put((fn, loop, future))
        return await future

    def submit(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the thread without waiting for it (its errors are logged)."""
        if not self._closed:
            self._calls.put((fn, None, None))

    async def stop(self) -> None:
        """Stop the thread after the calls already submitted; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._calls.put(_STOP)
        await asyncio.to_thread(self._thread.join, 30)

    def _run(self) -> None:
        wait = False  # the blocking idle step had nothing to wait for: wait for calls
        while True:
            try:
                if self._idle is not None and self._idle_blocks and not wait:
                    item = self._calls.get_nowait()
                else:
                    item = self._calls.get(timeout=self._poll)
            except queue.Empty:
                wait = False
                if self._idle is not None:
                    try:
                        wait = self._idle() is False
                    except Exception:  # the idle step reports its own faults; keep serving
                        logger.exception("kombu connection thread: idle step failed")
                continue
            wait = False
            if item is _STOP:
                return
            if item is _WAKE:
                continue
            fn, loop, future = item
            try:
                result = fn()
            except BaseException as exc:  # handed to the awaiting coroutine
                if future is None:  # an ack: the broker redelivers the message
                    logger.warning("kombu call failed (an ack is redelivered): %r", type(exc))
                else:
                    _resolve(loop, _set_exception, future, exc)
            else:
                if future is not None:
                    _resolve(loop, _set_result, future, result)


def _resolve(loop: asyncio.AbstractEventLoop, setter: Any, future: Any, value: Any) -> None:
    try:
        loop.call_soon_threadsafe(setter, future, value)
    except RuntimeError:  # the loop closed while the call ran: nobody waits for it any more
        pass


def _set_result(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
