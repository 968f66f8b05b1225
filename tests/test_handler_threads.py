"""Plain-def handlers run in daemon threads: a stuck one cannot keep the process alive."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from unimq.threads import HandlerThreads

SCRIPT = textwrap.dedent(
    """
    import asyncio, time
    from unimq import Broker

    broker = Broker("memory://", graceful_timeout=0.3)
    started = asyncio.Event()

    @broker.subscriber("t", group="g")
    def stuck(body: bytes) -> None:
        loop.call_soon_threadsafe(started.set)
        time.sleep(60)  # a call that hangs

    async def main() -> None:
        global loop
        loop = asyncio.get_running_loop()
        async with broker:
            await broker.publish("t", b"x")
            await started.wait()
        print("stopped", flush=True)

    asyncio.run(main())
    """
)


@pytest.mark.timeout(60)
def test_a_stuck_def_handler_does_not_keep_the_process_alive() -> None:
    """2830ee5 ran def handlers in a ThreadPoolExecutor, whose threads are joined at exit: the
    process lived until the handler returned (here 60 s) after 'stopped'."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=50
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "stopped" in done.stdout
    assert "abandoned" in done.stderr
    assert elapsed < 20, f"the process took {elapsed:.1f}s to exit"


def test_threads_run_calls_and_report_errors() -> None:
    pool = HandlerThreads(max_workers=2)
    assert pool.submit(lambda x: x * 2, 21).result(timeout=5) == 42
    failing = pool.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(timeout=5)
    futures = [pool.submit(time.sleep, 0.05) for _ in range(6)]
    for future in futures:
        future.result(timeout=5)
    assert len(pool._threads) <= 2
    pool.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        pool.submit(print)
