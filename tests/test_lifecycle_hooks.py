"""``@broker.on_startup`` / ``@broker.on_shutdown``: when they run, and what a failure does."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from unimq import Broker, Message

ROOT = Path(__file__).resolve().parent.parent


async def test_hooks_run_after_connect_and_before_disconnect_in_order() -> None:
    broker = Broker("memory://hooks-order")
    events: list[str] = []

    @broker.subscriber("hooks.t", group="g")
    async def handle(message: Message) -> None:
        events.append("handler start")
        await asyncio.sleep(0.1)
        events.append("handler end")

    @broker.on_startup
    async def first() -> None:
        events.append(f"startup 1 connected={broker.connected}")
        await broker.publish("hooks.t", b"from the startup hook")  # a service may publish

    @broker.on_startup
    async def second() -> None:
        events.append("startup 2")

    @broker.on_shutdown
    async def flush() -> None:
        events.append(f"shutdown connected={broker.connected}")
        await broker.publish("hooks.audit", b"still connected: may publish")

    async with broker:
        while "handler start" not in events:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert events == [
        "startup 1 connected=True",
        "startup 2",
        "handler start",
        "handler end",  # in-flight handlers finish before the shutdown hooks
        "shutdown connected=True",
    ]
    assert not broker.connected


async def test_a_failing_startup_hook_stops_the_start_and_disconnects() -> None:
    broker = Broker("memory://hooks-fail")
    shutdown: list[str] = []

    @broker.on_startup
    async def boom() -> None:
        raise RuntimeError("warm-up failed")

    @broker.on_shutdown
    async def flush() -> None:
        shutdown.append("ran")

    with pytest.raises(RuntimeError, match="warm-up failed"):
        await broker.start()
    assert not broker.connected
    assert shutdown == []  # the service never started: nothing to shut down


async def test_a_failing_shutdown_hook_is_logged_and_the_rest_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = Broker("memory://hooks-shutdown-fail")
    ran: list[str] = []

    @broker.on_shutdown
    async def boom() -> None:
        raise RuntimeError("flush failed")

    @broker.on_shutdown
    async def after() -> None:
        ran.append("after")

    with caplog.at_level(logging.ERROR, logger="unimq"):
        async with broker:
            pass
    assert ran == ["after"] and not broker.connected
    assert "shutdown hook boom failed" in caplog.text and "flush failed" in caplog.text


def test_unimq_run_runs_the_hooks(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "unimq.cli", "run", "tests.hooks_app:broker"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        seen = ""
        while "startup hook" not in seen:
            line = process.stdout.readline()
            assert line or process.poll() is None, f"exited early: {seen}"
            seen += line
            assert time.monotonic() < deadline, seen
        process.terminate()
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "shutdown hook" in out, err
