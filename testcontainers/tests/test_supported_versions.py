"""The "Supported broker versions" tables say exactly what the real-broker tests run.

README.md and docs/backends/*.md each have such a table; testcontainers/images/versions.env is
what build-images.sh builds and the fixtures start (a locally built image must carry the
version it is started as, see ``containers.ensure_image``). This test keeps the tables equal to
versions.env, so a version cannot be added, dropped or promoted in one place only. No broker is
needed here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from unimq_brokers import versions

ROOT = Path(__file__).resolve().parents[2]
HEADING = "Supported broker versions"
NAMES = {"rabbitmq": "RabbitMQ", "kafka": "Kafka", "rocketmq": "RocketMQ"}


def table_after_heading(text: str, heading: str = HEADING) -> list[list[str]]:
    """Body rows (cells stripped of spaces and backticks) of the first table after ``heading``."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("#") and heading in line]
    assert starts, f"no '{heading}' heading"
    rows: list[list[str]] = []
    in_table = False
    for line in lines[starts[0] + 1 :]:
        if line.startswith("|"):
            in_table = True
            cells = [c.strip().strip("`").strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                rows.append(cells)
        elif in_table or line.startswith("#"):
            break
    assert len(rows) > 1, f"no table under '{heading}'"
    return rows[1:]  # without the header row


def expected(kind: str) -> list[tuple[str, str, str | None]]:
    """(version, "full" | "smoke", Debian suite or None), newest first."""
    return [
        (version, "full" if i == 0 else "smoke", suite)
        for i, (version, suite) in enumerate(versions.entries(kind))
    ]


def check_row(kind: str, row_version: str, image: str, runs: str, want: tuple) -> None:
    version, role, suite = want
    assert row_version == version
    assert runs.lower().startswith(role), f"{NAMES[kind]} {version}: '{runs}' should say {role}"
    if suite is not None:
        assert suite in image, f"{NAMES[kind]} {version}: image column should name Debian {suite}"


def test_readme_table_matches_versions_env() -> None:
    rows = table_after_heading((ROOT / "README.md").read_text())
    by_kind: dict[str, list[list[str]]] = {k: [] for k in NAMES}
    for row in rows:
        kind = {v: k for k, v in NAMES.items()}.get(row[0])
        assert kind is not None, f"README: unknown broker {row[0]!r}"
        by_kind[kind].append(row)
    for kind in NAMES:
        got = by_kind[kind]
        want = expected(kind)
        assert [r[1] for r in got] == [w[0] for w in want], f"README {NAMES[kind]} versions"
        for row, w in zip(got, want, strict=True):
            check_row(kind, row[1], row[2], row[3], w)


@pytest.mark.parametrize("kind", sorted(NAMES))
def test_backend_doc_table_matches_versions_env(kind: str) -> None:
    rows = table_after_heading((ROOT / "docs" / "backends" / f"{kind}.md").read_text())
    want = expected(kind)
    assert [r[0] for r in rows] == [w[0] for w in want], f"docs/backends/{kind}.md versions"
    for row, w in zip(rows, want, strict=True):
        check_row(kind, row[0], row[1], row[2], w)


def test_the_smoke_set_names_real_conformance_cases() -> None:
    from unimq.testing.conformance import ConformanceSuite

    cases = {name for name in dir(ConformanceSuite) if name.startswith("test_")}
    assert cases >= versions.SMOKE_CASES, versions.SMOKE_CASES - cases
