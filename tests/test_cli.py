"""The ``unimq`` command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def unimq(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "UNIMQ_URL"}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "unimq.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=environment,
    )


def test_no_command_prints_help_and_exits_2() -> None:
    result = unimq()
    assert result.returncode == 2 and "run" in result.stderr and "publish" in result.stderr


def test_publish_to_memory_prints_the_id() -> None:
    result = unimq(
        "publish",
        "--url",
        "memory://",
        "orders.created",
        '{"order_id": "o-1"}',
        "--json",
        "--key",
        "c-7",
        "--header",
        "tenant=acme",
    )
    # memory:// from a shell: the message went to a hub that ended with the command
    assert result.returncode == 1, result.stderr
    assert "memory:// lives inside one process" in result.stderr and result.stdout == ""


def test_publish_reads_the_unimq_settings_from_the_environment() -> None:
    result = unimq("publish", "--url", "memory://", "t", "x", env={"UNIMQ_CONNECT_TIMEOUT": "-1"})
    assert result.returncode == 1
    assert "UNIMQ_CONNECT_TIMEOUT" in result.stderr


def test_publish_without_url_is_a_usage_error() -> None:
    result = unimq("publish", "t", "body")
    assert result.returncode == 2 and "UNIMQ_URL" in result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--header", "novalue"], "NAME=VALUE"),
        (["--json"], "not valid JSON"),
        (["--delay", "-1"], "negative"),
    ],
)
def test_publish_usage_errors(args: list[str], needle: str) -> None:
    result = unimq("publish", "--url", "memory://", "t", "{bad", *args)
    assert result.returncode == 2 and needle in result.stderr


def test_publish_to_unknown_scheme_names_installed_ones() -> None:
    result = unimq("publish", "--url", "nats://u:secretpw@127.0.0.1", "t", "x")
    assert result.returncode == 1
    assert "UnknownSchemeError" in result.stderr and "memory://" in result.stderr
    assert "secretpw" not in result.stderr


@pytest.mark.parametrize(
    ("target", "needle"),
    [
        ("tests.cli_app", "MODULE:ATTR"),
        ("no_such_module_xyz:broker", "cannot import"),
        ("tests.cli_app:missing", "no attribute"),
        ("tests.cli_app:not_a_broker", "not a unimq Broker"),
    ],
)
def test_run_usage_errors(target: str, needle: str) -> None:
    result = unimq("run", target)
    assert result.returncode == 2 and needle in result.stderr


def test_schemes_lists_installed_transports() -> None:
    result = unimq("schemes")
    assert result.returncode == 0 and "memory://" in result.stdout


@pytest.mark.parametrize("target", ["tests.cli_app:broker", "tests.cli_app:make_broker"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_until_signal_then_stop_gracefully(target: str, signum: int) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "unimq.cli", "run", target],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        seen = ""
        assert process.stderr is not None
        while "running 1 subscriber" not in seen:
            line = process.stderr.readline()
            assert line or process.poll() is None, f"exited early: {seen}"
            seen += line
            assert time.monotonic() < deadline, seen
        process.send_signal(signum)
        _, rest = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, rest
    assert "finishing in-flight messages" in rest and "stopped cleanly" in rest


def test_conformance_command_takes_flags_from_the_capabilities() -> None:
    result = unimq(
        "conformance",
        "toy://cli-conformance",
        "--",
        "-q",
        "-k",
        "ordered or broadcast",
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "passed" in result.stdout
