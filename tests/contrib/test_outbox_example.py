"""examples/consistency runs and its end-to-end check passes, with and without relay crashes."""

from __future__ import annotations

import pytest

pytest.importorskip("aiosqlite")

from examples.consistency.app import main

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("crash", [False, True])
def test_consistency_example(crash: bool, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--orders", "80", *(["--crash"] if crash else [])]) == 0
    out = capsys.readouterr().out
    assert "OK: the stock moved exactly once" in out
    if crash:
        assert "relay killed" in out
