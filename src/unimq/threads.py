"""The worker threads that run plain-``def`` handlers, off the event loop.

Why not ``concurrent.futures.ThreadPoolExecutor``: its threads are joined when the interpreter
exits, so a ``def`` handler still running after the graceful timeout kept the process alive long
after shutdown (a stuck HTTP call: forever), although unimq had already given up on it and the
broker would redeliver its message. These threads are daemons: at exit they are abandoned, as
async handlers are cancelled, and their unacked messages go back to the broker.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

T = TypeVar("T")

_STOP = None


class HandlerThreads(Executor):
    """Up to ``max_workers`` daemon threads, started on demand."""

    def __init__(self, max_workers: int, thread_name_prefix: str = "unimq-handler") -> None:
        self._max_workers = max_workers
        self._prefix = thread_name_prefix
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._shutdown = False
        self.running = 0  # handlers running now (read for the shutdown log)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot run a handler after the broker stopped")
            future: Future[T] = Future()
            self._work.put((future, lambda: fn(*args, **kwargs)))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self._max_workers:
                thread = threading.Thread(
                    target=self._run, name=f"{self._prefix}_{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            return future

    def _run(self) -> None:
        while True:
            item = self._work.get()
            if item is _STOP:
                return
            future, call = item
            if future.set_running_or_notify_cancel():
                with self._lock:
                    self.running += 1
                try:
                    result = call()
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
                finally:
                    with self._lock:
                        self.running -= 1
            del item, future, call
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while True:
                    try:
                        item = self._work.get_nowait()
                    except queue.Empty:
                        break
                    if item is not _STOP:
                        item[0].cancel()
            for _ in self._threads:
                self._work.put(_STOP)
        if wait:
            for thread in self._threads:
                thread.join()
