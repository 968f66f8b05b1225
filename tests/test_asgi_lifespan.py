"""``broker.lifespan`` under Starlette's TestClient and under a real uvicorn process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the web extra: pip install 'unimq[web]'")
pytest.importorskip("uvicorn", reason="the web extra: pip install 'unimq[web]'")
httpx = pytest.importorskip("httpx", reason="the web extra: pip install 'unimq[web]'")

from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import PlainTextResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from unimq import Broker  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def test_lifespan_connects_on_startup_and_stops_on_shutdown() -> None:
    broker = Broker("memory://asgi-testclient")
    events: list[str] = []
    broker.on_startup(_record(events, "startup"))
    broker.on_shutdown(_record(events, "shutdown"))

    async def connected(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(request.state.broker.connected))

    app = Starlette(routes=[Route("/", connected)], lifespan=broker.lifespan)
    with TestClient(app) as client:
        assert client.get("/").text == "True"
        assert events == ["startup"]
    assert events == ["startup", "shutdown"]
    assert not broker.connected


def _record(events: list[str], name: str):  # type: ignore[no-untyped-def]
    async def hook() -> None:
        events.append(name)

    return hook


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_uvicorn_sigterm_lets_the_in_flight_handler_finish(tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    marker.touch()
    port = _free_port()
    env = {**os.environ, "ASGI_MARKER": str(marker), "ASGI_SLOW_SECONDS": "1.5"}
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.asgi_app:app", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        seen = ""
        deadline = time.monotonic() + 30
        while "Application startup complete" not in seen:
            line = process.stdout.readline()
            assert line or process.poll() is None, f"uvicorn exited early: {seen}"
            seen += line
            assert time.monotonic() < deadline, seen
        response = httpx.post(f"http://127.0.0.1:{port}/slow", timeout=10)
        message_id = response.json()["message_id"]
        while f"started {message_id}" not in marker.read_text():
            assert time.monotonic() < deadline, marker.read_text()
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # uvicorn re-raises the signal once it has shut down cleanly (exit status -SIGTERM)
    assert process.returncode in (0, -signal.SIGTERM), seen + rest
    assert "Application shutdown complete" in rest, rest
    notes = marker.read_text().splitlines()
    assert notes == [f"started {message_id}", f"finished {message_id}", "shutdown hook"], rest
