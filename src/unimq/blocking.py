"""A blocking facade for applications without an event loop of their own (Flask, Django,
scripts, Celery tasks): publish from ordinary threads.

::

    from unimq.blocking import BlockingBroker

    broker = BlockingBroker.from_env()      # or BlockingBroker("amqp://...")
    broker.start()                          # connects (and runs subscribers, if any)

    def create_order(request):              # any thread, e.g. a Flask or Django view
        receipt = broker.publish("orders.created", {"order_id": "o-1"}, key="customer-7")
        return receipt.message_id

    broker.close()                          # or use it as a context manager

Why a thread of its own: unimq's transports are asyncio clients, and a web framework's worker
threads have no running loop (and must not start one per request). The facade runs one event
loop in a daemon thread and hands each call to it; the calling thread blocks until the broker
confirmed the message durably, exactly as ``await broker.publish`` does. Calls are thread-safe
and run concurrently on the loop, so many threads publishing at once are pipelined.

It is process-local: in a pre-forking server (gunicorn, uWSGI) create it after the fork
(gunicorn's ``post_fork`` hook, or lazily on first use in each worker).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar

from .broker import Broker, PublishReceipt
from .errors import NotConnectedError, OperationTimeoutError, PublishError, UnimqError
from .settings import positive_seconds

T = TypeVar("T")
# Distinct classes on Python 3.10, all the builtin TimeoutError from 3.11 on.
_TIMEOUTS = (concurrent.futures.TimeoutError, asyncio.TimeoutError, TimeoutError)


class BlockingBroker:
    """A :class:`~unimq.Broker` driven from ordinary threads.

    ``timeout`` (seconds, default 30) bounds each blocking call; when it passes, the call
    raises :class:`~unimq.PublishError` (for ``publish``) or
    :class:`~unimq.errors.OperationTimeoutError` (a ``UnimqError`` and a ``TimeoutError``) and
    its work on the loop is cancelled. Subscribers declared with :meth:`subscriber` (or on the
    wrapped ``broker``) run on the facade's loop once :meth:`start` is called; plain ``def``
    handlers run in worker threads as usual.
    """

    def __init__(self, url: str | Broker, *, timeout: float = 30.0, **options: Any) -> None:
        self.broker = url if isinstance(url, Broker) else Broker(url, **options)
        self.timeout = positive_seconds(timeout, "timeout")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._started = False

    @classmethod
    def from_env(cls, default_url: str | None = None, **overrides: Any) -> BlockingBroker:
        """Like :meth:`Broker.from_env`: ``UNIMQ_URL`` and ``UNIMQ_*`` options."""
        timeout = overrides.pop("timeout", 30.0)  # checked by __init__ (a typed error)
        return cls(Broker.from_env(default_url, **overrides), timeout=timeout)

    # -- declaring subscribers (before start) ---------------------------------------------

    def subscriber(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        """Same as :meth:`Broker.subscriber`."""
        return self.broker.subscriber(*args, **kwargs)

    def include_router(self, router: Any) -> None:
        self.broker.include_router(router)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> BlockingBroker:
        """Start the loop thread, connect and start the subscribers; idempotent."""
        with self._lock:
            if self._started:
                return self
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()
                loop.close()

            thread = threading.Thread(target=run, name="unimq-blocking-loop", daemon=True)
            thread.start()
            ready.wait()
            self._loop, self._thread = loop, thread
            try:
                self._call(self.broker.start(), self.broker.connect_timeout + self.timeout)
            except BaseException:
                self._stop_loop()
                raise
            self._started = True
            atexit.register(self.close)
        return self

    def close(self, timeout: float | None = None) -> None:
        """Stop the subscribers (letting in-flight handlers finish), disconnect, stop the loop.

        Idempotent; also runs at interpreter exit.
        """
        with self._lock:
            if not self._started:
                return
            self._started = False
            atexit.unregister(self.close)
            graceful = self.broker.graceful_timeout if timeout is None else timeout
            try:
                self._call(self.broker.stop(graceful), graceful + self.timeout)
            finally:
                self._stop_loop()

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=10)

    def __enter__(self) -> BlockingBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- calls ----------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        body: Any,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: timedelta | float | None = None,
        deliver_at: datetime | None = None,
        message_id: str | None = None,
        timeout: float | None = None,
    ) -> PublishReceipt:
        """Publish and block until the broker holds the message durably (see
        :meth:`Broker.publish`)."""
        work = self.broker.publish(
            topic,
            body,
            key=key,
            headers=headers,
            delay=delay,
            deliver_at=deliver_at,
            message_id=message_id,
        )
        try:
            return self._call(work, self.timeout if timeout is None else timeout)
        except TimeoutError:
            raise PublishError(
                f"publishing to {topic!r} did not complete within "
                f"{self.timeout if timeout is None else timeout:g}s; the message may or may "
                "not have been published (retry with the same message_id to stay idempotent)"
            ) from None

    def drain(self, timeout: float | None = None) -> None:
        """Block until no message is in flight (see :meth:`Broker.drain`); raises
        :class:`~unimq.errors.OperationTimeoutError` (a ``TimeoutError``) after ``timeout``."""
        try:
            self._call(self.broker.drain(timeout), (timeout or self.timeout) + 1)
        except OperationTimeoutError:
            raise
        except _TIMEOUTS:
            waited = timeout or self.timeout
            failure = OperationTimeoutError(f"drain: messages still in flight after {waited:g}s")
        else:
            return
        raise failure from None

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run any coroutine on the facade's loop (e.g. ``DeadLetterQueue`` operations)."""
        return self._call(coroutine, self.timeout if timeout is None else timeout)

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        loop = self._loop
        if loop is None:
            coroutine.close()
            raise NotConnectedError("the blocking broker is not started: call start() first")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            coroutine.close()
            raise UnimqError(
                "BlockingBroker was called from its own event loop (an async handler?); "
                "use 'await broker.broker.publish(...)' there instead"
            )
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        try:
            return future.result(timeout)
        except _TIMEOUTS:
            if future.done():  # the coroutine's own error, not our wait: let it through
                raise
        future.cancel()
        raise OperationTimeoutError(f"timed out after {timeout:g}s")

    def __repr__(self) -> str:
        state = "started" if self._started else "stopped"
        return f"BlockingBroker({self.broker.url.redacted()!r}, {state})"
