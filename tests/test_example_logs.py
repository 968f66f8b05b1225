"""examples/logs ships a (small, generated) log file through memory:// into SQLite."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from examples.logs.app import generate, main

pytestmark = pytest.mark.timeout(120)


def test_the_log_example_stores_every_line_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UNIMQ_URL", raising=False)
    log, db = tmp_path / "app.log", tmp_path / "logs.sqlite"
    assert main(["--file", str(log), "--lines", "3000", "--db", str(db), "--batch", "200"]) == 0
    out, err = capsys.readouterr()
    assert "generating 3,000 log lines" in err
    assert "100.0%" in err and "stored 3,000/3,000" in err  # the progress line
    assert "shipped 3,000 lines" in out and "through memory://logs" in out
    assert "lines/s" in out and "SQLite rows: 3,000" in out
    lines = log.read_text().splitlines()
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT line, level, service FROM logs").fetchall()
    assert sorted(line for line, _, _ in rows) == sorted(lines)
    assert {level for _, level, _ in rows} <= {"INFO", "DEBUG", "WARN", "ERROR"}
    assert {service for _, _, service in rows} <= {"api", "billing", "search", "auth", "worker"}

    # A second run reuses the file (no generation) and recreates the database.
    assert main(["--file", str(log), "--db", str(db), "--batch", "1000"]) == 0
    out, err = capsys.readouterr()
    assert "generating" not in err and "SQLite rows: 3,000" in out


def test_the_generated_log_is_deterministic(tmp_path: Path) -> None:
    generate(tmp_path / "a.log", 50)
    generate(tmp_path / "b.log", 50)
    assert (tmp_path / "a.log").read_text() == (tmp_path / "b.log").read_text()
    assert len((tmp_path / "a.log").read_text().splitlines()) == 50
