"""CLI mistakes give clean messages and a non-zero exit; BlockingBroker timeouts are typed;
the memory idempotency store forgets handled ids after its TTL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from unimq import Broker, Message
from unimq.blocking import BlockingBroker
from unimq.errors import ConfigurationError, UnimqError
from unimq.idempotency import MemoryIdempotencyStore

ROOT = Path(__file__).resolve().parent.parent


def unimq(*args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "UNIMQ_URL"}
    return subprocess.run(
        [sys.executable, "-m", "unimq.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=environment,
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "json:loads"], "takes no arguments"),
        (["run", "tests.cli_app:broker", "--metrics-port", "99999"], "65535"),
        (["publish", "--url", "memory://", "t", "x", "--delay", "inf"], "finite"),
        (["publish", "--url", "memory://", "t", "x", "--delay", "nan"], "finite"),
    ],
)
def test_cli_mistakes_are_usage_errors(args: list[str], needle: str) -> None:
    result = unimq(*args)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["publish", "--url", "amqp://h:\u00b2", "t", "x"],
        ["publish", "--url", "memory://", "t", "x", "--header", "unimq-id=1"],
        ["publish", "--url", "memory://u:Zq-pw@ss-Xw@vault", "t" * 300, "x"],
    ],
)
def test_cli_bad_input_is_a_clean_error(args: list[str]) -> None:
    result = unimq(*args)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "Error" in result.stderr
    assert "Zq" not in result.stderr + result.stdout


def test_blocking_run_timeout_is_a_unimq_error_and_a_timeout_error() -> None:
    with BlockingBroker("memory://", timeout=5) as broker:
        with pytest.raises(UnimqError) as info:
            broker.run(asyncio.sleep(10), timeout=0.1)
        assert isinstance(info.value, TimeoutError)


def test_blocking_drain_timeout_is_a_unimq_error_and_a_timeout_error() -> None:
    inner = Broker("memory://")
    release = asyncio.Event()

    @inner.subscriber("t", group="g")
    async def handle(message: Message) -> None:
        await release.wait()

    with BlockingBroker(inner, timeout=5) as broker:
        broker.publish("t", b"x")
        with pytest.raises(UnimqError) as info:
            broker.drain(timeout=0.2)
        assert isinstance(info.value, TimeoutError)
        loop = broker._loop
        assert loop is not None
        loop.call_soon_threadsafe(release.set)


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), 0, -1])
def test_blocking_timeout_must_be_finite(timeout: float) -> None:
    with pytest.raises(ConfigurationError):
        BlockingBroker("memory://", timeout=timeout)


async def test_memory_idempotency_marks_expire_after_the_ttl() -> None:
    store = MemoryIdempotencyStore(ttl=0.05)
    assert await store.begin("g", "a", 10)
    await store.complete("g", "a")
    assert not await store.begin("g", "a", 10)  # a duplicate within the TTL
    await asyncio.sleep(0.06)
    assert await store.begin("g", "a", 10)  # forgotten after the TTL: handled again
    await store.release("g", "a")


async def test_memory_idempotency_prunes_expired_marks_as_it_goes() -> None:
    store = MemoryIdempotencyStore(ttl=0.01)
    for i in range(100):
        await store.begin("g", str(i), 10)
        await store.complete("g", str(i))
    await asyncio.sleep(0.02)
    for i in range(100, 200):
        await store.begin("g", str(i), 10)
        await store.complete("g", str(i))
    assert len(store) <= 101  # the first 100 are gone: each complete drops up to two


@pytest.mark.parametrize("kwargs", [{"ttl": float("nan")}, {"ttl": 0}, {"max_entries": 0}])
def test_memory_idempotency_options_are_checked(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        MemoryIdempotencyStore(**kwargs)  # type: ignore[arg-type]


def test_cli_log_lines_are_masked_even_from_other_libraries() -> None:
    import logging

    from unimq.cli import mask_logs

    stream = __import__("io").StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        mask_logs(("Zq-opt-Xw",))
        logging.getLogger("some.client").warning(
            "reconnecting to amqp://u:Zq-pw-Xw@h/ with token=Zq-tok-Xw and Zq-opt-Xw"
        )
    finally:
        root.removeHandler(handler)
    assert "Zq" not in stream.getvalue() and "reconnecting" in stream.getvalue()


def test_blocking_from_env_timeout_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIMQ_URL", "memory://")
    with pytest.raises(ConfigurationError):
        BlockingBroker.from_env(timeout="soon")
