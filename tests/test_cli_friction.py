"""Small things a new user trips over on the ``unimq`` command line (issue 16, point 7)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import unimq
from unimq import Broker, Message
from unimq.cli import main
from unimq.plugins import lazy_transport, missing_extra

ROOT = Path(__file__).resolve().parent.parent


def _unimq(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "unimq.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_version() -> None:
    result = _unimq("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"unimq {unimq.__version__}"


@pytest.mark.parametrize(
    "argv", [["bogus"], ["publish"], ["run", "a:b", "--no-such-flag"], ["run", "nocolon"]]
)
def test_main_returns_exit_codes_instead_of_raising(argv: list[str]) -> None:
    assert main(argv) == 2


def test_help_returns_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "--version" in capsys.readouterr().out


def test_log_level_after_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schemes", "--log-level", "debug"]) == 0
    assert main(["dlq", "list", "t.dlq", "--url", "memory://x", "--log-level", "error"]) == 0
    assert main(["schemes", "--log-level", "loud"]) == 2


@pytest.mark.parametrize("command", [["publish"], ["conformance"], ["lag"], ["dlq", "show"]])
def test_every_positional_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    positionals = out.split("positional arguments:", 1)[1].split("options:", 1)[0]
    lines = [line for line in positionals.splitlines() if line.strip()]
    # every positional line carries a description next to its name (or on the next line)
    names = [line for line in lines if line.startswith("  ") and not line.startswith("    ")]
    assert names and all(len(line.split()) > 1 or line is not lines[-1] for line in names), out
    assert all(len(line.strip().split(None, 1)) == 2 for line in names), out


def test_run_a_class_is_a_usage_error() -> None:
    result = _unimq("run", "tests.cli_app:Broker")
    assert result.returncode == 2, result.stderr
    assert "is a class" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["publish", "--url", "memory://", "t", "x"],
        ["lag", "t", "g", "--url", "memory://"],
        ["dlq", "list", "t.dlq", "--url", "memory://"],
    ],
)
def test_memory_from_a_shell_says_it_reaches_nothing(args: list[str]) -> None:
    result = _unimq(*args)
    assert result.returncode == 1, result.stderr
    assert "memory:// lives inside one process" in result.stderr


async def test_memory_from_code_in_the_same_process_still_works(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import asyncio

    seen: list[bytes] = []
    broker = Broker("memory://friction-same-process")

    @broker.subscriber("f.t", group="g")
    async def handle(message: Message) -> None:
        seen.append(message.body)

    async with broker:
        code = await asyncio.to_thread(
            main, ["publish", "--url", "memory://friction-same-process", "f.t", "hi"]
        )
        await broker.drain(5)
    assert code == 0 and seen == [b"hi"]


def test_schemes_marks_a_missing_extra() -> None:
    factory = lazy_transport("no_such_client_lib", "a client", "nope", "x.y:Z")
    assert missing_extra(factory) == "nope"
    assert missing_extra(lazy_transport("json", "json", "json", "x.y:Z")) is None
    result = _unimq("schemes")
    assert result.returncode == 0
    for line in result.stdout.splitlines():
        if line.startswith("memory://"):
            assert "not installed" not in line


def test_every_shipped_package_is_typed() -> None:
    packages = [
        init.parent
        for base in ("src", "adapters", "contrib")
        for init in (ROOT / base).glob("*/__init__.py")
    ]
    assert len(packages) >= 8
    assert [p.name for p in packages if not (p / "py.typed").exists()] == []
