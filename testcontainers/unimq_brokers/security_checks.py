"""Shared checks of the secured-broker tests: run a refused operation, then assert what the
user saw (error type, time, wording, no secret anywhere, nothing from the client on stderr)."""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import unimq
from unimq import Broker

CONNECT_TIMEOUT = 10.0
Action = Callable[[Broker], Awaitable[Any]]


def publish(topic: str) -> Action:
    async def action(broker: Broker) -> None:
        await broker.publish(topic, b"x")

    return action


async def refused(
    url: str,
    action: Action | None,
    *,
    subscribe: tuple[str, str] | None = None,
    **options: Any,
) -> tuple[BaseException, float]:
    """Connect (registering ``subscribe=(topic, group)`` first), run ``action``; return the
    error raised and the seconds it took from ``Broker(...)``."""
    started = time.monotonic()
    broker = Broker(url, connect_timeout=CONNECT_TIMEOUT, **options)
    if subscribe is not None:

        @broker.subscriber(subscribe[0], group=subscribe[1])
        async def handler(message: unimq.Message) -> None:  # pragma: no cover - never runs
            pass

    try:
        async with broker:
            if action is not None:
                await asyncio.wait_for(action(broker), CONNECT_TIMEOUT * 2)
    except Exception as exc:  # the error under test
        return exc, time.monotonic() - started
    pytest.fail("the refused operation succeeded")


def check(
    backend: str,
    case: str,
    exc: BaseException,
    seconds: float,
    expected: type[BaseException],
    says: list[str],
    secrets: list[str],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    stderr_marks: tuple[str, ...] = (),
) -> None:
    out, err = capfd.readouterr()
    with capfd.disabled():  # the note table of the report: broker x case -> error, time
        print(f"\nSECURITY {backend} | {case} | {type(exc).__name__} | {seconds:.2f}s | {exc}")
    assert isinstance(exc, expected), f"{case}: {type(exc).__name__}: {exc}"
    assert isinstance(exc, unimq.UnimqError)
    assert seconds <= CONNECT_TIMEOUT, f"{case} took {seconds:.1f}s"
    text = str(exc)
    for word in says:
        assert word in text, f"{case}: {word!r} not in {text!r}"
    produced = {
        "str": text,
        "repr": repr(exc),
        "traceback": "".join(traceback.format_exception(exc)),
        "logs": caplog.text + "".join(repr(r.args) for r in caplog.records),
        "stdout": out,
        "stderr": err,
    }
    for where, value in produced.items():
        for secret in secrets:
            assert secret not in value, f"{case}: a secret appears in {where}"
    for mark in stderr_marks:
        assert mark not in err, f"{case}: client output on stderr: {err}"
