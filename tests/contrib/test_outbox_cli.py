"""``unimq outbox status`` and ``unimq outbox relay`` (SQLite; the relay as a real process)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("aiosqlite")

from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from unimq_sql import SQLOutbox

from unimq.cli import main

pytestmark = pytest.mark.timeout(120)


def fill(path: Path, rows: int) -> str:
    url = f"sqlite+aiosqlite:///{path}"

    async def write() -> None:
        engine = create_async_engine(url)
        outbox = SQLOutbox(engine)
        await outbox.create_table()
        async with AsyncSession(engine) as session, session.begin():
            for n in range(rows):
                await outbox.publish(session, "orders", {"n": n}, key="k")
        await engine.dispose()

    asyncio.run(write())
    return f"sqlite:///{path}"


def test_status_shows_backlog_and_oldest_age(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = fill(tmp_path / "o.db", 3)
    assert main(["outbox", "status", url]) == 0
    assert capsys.readouterr().out.startswith("pending 3  oldest ")
    monkeypatch.setenv("UNIMQ_OUTBOX_URL", url)
    assert main(["outbox", "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["pending"] == 3 and status["oldest_age"] >= 0 and status["failed"] == 0


def test_status_errors_are_short_and_never_show_the_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UNIMQ_OUTBOX_URL", raising=False)
    assert main(["outbox", "status"]) == 2  # a usage error: main returns its exit code
    assert "UNIMQ_OUTBOX_URL" in capsys.readouterr().err
    assert main(["outbox", "status", "postgresql://app:pw-s3cret@127.0.0.1:9/x"]) == 1
    captured = capsys.readouterr()
    assert "pw-s3cret" not in captured.out + captured.err
    assert "Traceback" not in captured.err


def test_relay_command_relays_and_stops_on_sigterm(tmp_path: Path) -> None:
    url = fill(tmp_path / "o.db", 5)
    env = {**os.environ, "UNIMQ_URL": "memory://cli-relay"}
    process = subprocess.Popen(
        [sys.executable, "-m", "unimq.cli", "outbox", "relay", url, "--retention", "60"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        status: dict[str, object] = {}
        while time.monotonic() < deadline:
            out = subprocess.run(
                [sys.executable, "-m", "unimq.cli", "outbox", "status", url, "--json"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            status = json.loads(out)
            if status["sent"] == 5:
                break
            time.sleep(0.2)
        assert status["pending"] == 0 and status["sent"] == 5
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "outbox relay stopped cleanly" in err
