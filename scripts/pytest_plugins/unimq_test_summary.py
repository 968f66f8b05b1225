"""The closing summary table (tier x suite x backend -> passed / failed / skipped, wall time) and
the CI rule that a real-broker or store test is never skipped silently.

Why: pytest's own last line ("300 passed, 40 skipped") looks the same whether the 40 skips were
the conformance suite's declared capability gaps or every RabbitMQ test because Docker was
missing. The table shows, per suite and backend, what ran and why anything did not.

Under ``CI=true``:

* a skip of a test in tier ``realbroker`` or ``store`` becomes a failure, unless it is a
  capability skip that a shared ``unimq.testing`` case (conformance, idempotency) raises while
  it runs (e.g. "the toy:// transport does not implement SupportsLag");
* a module skipped at collection (``pytest.importorskip`` of a missing client library) is a
  collection error;
* ``--unimq-require-tiers quick,store,realbroker`` (passed by scripts/test.sh for the full run)
  fails the run when a named tier passed no test at all, so a run that selected nothing, or lost
  a tier, cannot pass.

The final line printed is plain ``N passed, N failed, N skipped`` (errors count as failed,
expected failures as skipped), after pytest's own summary line.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from unimq_test_tiers import (
    QUICK,
    REALBROKER,
    STORE,
    SUITE_KEY,
    TIERS,
    Suite,
    is_under,
    module_suite,
    shared_cases_module,
)

from unimq.testing.conformance.features import REQUIRES_SUFFIX

STRICT_TIERS = (REALBROKER, STORE)


def is_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass
class Row:
    """Counts and time of one (tier, suite, backend) cell."""

    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    reasons: Counter[str] = field(default_factory=Counter)


@dataclass
class _Test:
    suite: Suite
    outcome: str = "passed"
    reason: str = ""
    seconds: float = 0.0
    ran: bool = False


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
    else:
        reason = str(longrepr or "")
    return reason.removeprefix("Skipped: ").strip() or "(no reason given)"




def allowed_ci_skip(item: pytest.Item, report: pytest.TestReport) -> bool:
    """A capability skip the shared ``unimq.testing`` cases declare: while they run, or in
    their ``requirements`` fixture (setup) for a case whose ``requires(...)`` the backend
    lacks (a RabbitMQ broker has no transactions: declared, not missing)."""
    if shared_cases_module(item) is None:
        return False
    if report.when == "call":
        return True
    return report.when == "setup" and skip_reason(report).endswith(REQUIRES_SUFFIX)


class SummaryPlugin:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        required = config.getoption("unimq_require_tiers") or ""
        self.required = [t.strip() for t in required.split(",") if t.strip()]
        unknown = set(self.required) - set(TIERS)
        if unknown:
            raise pytest.UsageError(f"--unimq-require-tiers: unknown tier(s) {sorted(unknown)}")
        self.tests: dict[str, _Test] = {}
        self.collect_problems: list[tuple[Suite, str, str]] = []  # suite, outcome, reason
        self.started = time.monotonic()
        self.problems: list[str] = []

    # -- recording -----------------------------------------------------------------------

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            suite = item.stash.get(SUITE_KEY, None) or Suite(QUICK, "unit", "-")
            self.tests[item.nodeid] = _Test(suite)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.passed or not report.nodeid:
            return
        path = Path(report.fspath)
        in_tc = is_under(path, self.config.rootpath, "testcontainers")
        suite = Suite(REALBROKER if in_tc else QUICK, module_suite(path), "-")
        outcome = "failed" if report.failed else "skipped"
        reason = skip_reason(report) if report.skipped else "collection error"
        self.collect_problems.append((suite, outcome, reason))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        test = self.tests.get(report.nodeid)
        if test is None:
            # Under pytest-xdist the controller collects nothing: the worker sent the test's
            # suite along with its report (see pytest_runtest_makereport).
            suite = _suite_from(report)
            if suite is None:
                return
            test = self.tests[report.nodeid] = _Test(suite)
        test.seconds += report.duration
        test.ran = True
        if report.failed and not hasattr(report, "wasxfail"):
            test.outcome, test.reason = "failed", ""
        elif test.outcome != "failed" and (report.skipped or hasattr(report, "wasxfail")):
            test.outcome = "skipped"
            wasxfail = getattr(report, "wasxfail", None)
            test.reason = f"xfail: {wasxfail}" if wasxfail is not None else skip_reason(report)

    # -- the CI rules ----------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        suite = item.stash.get(SUITE_KEY, None)
        if suite is not None and report.when == "setup":
            report.user_properties.append(
                (_SUITE_PROPERTY, [suite.tier, suite.suite, suite.backend])
            )
        if (
            is_ci()
            and report.skipped
            and not hasattr(report, "wasxfail")
            and suite is not None
            and suite.tier in STRICT_TIERS
            and not allowed_ci_skip(item, report)
        ):
            report.outcome = "failed"
            report.longrepr = (
                f"CI=true: a {suite.tier} test may not be skipped "
                f"({suite.suite} on {suite.backend}): {skip_reason(report)}"
            )
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(
        self, collector: pytest.Collector
    ) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
        report = yield
        if is_ci() and report.skipped and isinstance(collector, pytest.Module):
            report.outcome = "failed"
            report.longrepr = (
                f"CI=true: a test module may not be skipped at collection "
                f"({collector.nodeid}): {skip_reason(report)}"
            )
        return report

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if not self.required or hasattr(self.config, "workerinput"):  # an xdist worker sees a part
            return
        passed = Counter(
            t.suite.tier for t in self.tests.values() if t.outcome == "passed" and t.ran
        )
        for tier in self.required:
            if passed[tier] == 0:
                self.problems.append(
                    f"required tier {tier!r} passed no test (--unimq-require-tiers)"
                )
        if self.problems and session.exitstatus in (
            pytest.ExitCode.OK,
            pytest.ExitCode.NO_TESTS_COLLECTED,
        ):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    # -- reporting -----------------------------------------------------------------------

    def rows(self) -> dict[Suite, Row]:
        rows: dict[Suite, Row] = {}
        for test in self.tests.values():
            if not test.ran:
                continue
            row = rows.setdefault(test.suite, Row())
            row.seconds += test.seconds
            if test.outcome == "passed":
                row.passed += 1
            elif test.outcome == "failed":
                row.failed += 1
            else:
                row.skipped += 1
                row.reasons[test.reason] += 1
        for suite, outcome, reason in self.collect_problems:
            row = rows.setdefault(suite, Row())
            if outcome == "failed":
                row.failed += 1
            else:
                row.skipped += 1
                row.reasons[f"whole module skipped: {reason}"] += 1
        return dict(sorted(rows.items(), key=lambda kv: (kv[0].sort_key(), kv[0].suite)))

    def lines(self) -> Iterable[str]:
        rows = self.rows()
        header = ("tier", "suite", "backend", "passed", "failed", "skipped", "time")
        table = [header] + [
            (
                s.tier,
                s.suite,
                s.backend,
                str(r.passed),
                str(r.failed),
                str(r.skipped),
                f"{r.seconds:.1f}s",
            )
            for s, r in rows.items()
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        for cells in table:
            left = [cells[i].ljust(widths[i]) for i in range(3)]
            right = [cells[i].rjust(widths[i]) for i in range(3, len(header))]
            yield "  ".join(left + right)
        reasons = [(s, r) for s, r in rows.items() if r.reasons]
        if reasons:
            yield ""
            yield "skipped, with the reason:"
            for suite, row in reasons:
                for reason, count in sorted(row.reasons.items()):
                    yield f"  {suite.tier} {suite.suite} {suite.backend}: {count} x {reason}"
        not_proven = sorted(
            {
                f"{s.suite} on {s.backend}"
                for s, r in rows.items()
                if s.tier in STRICT_TIERS and not r.passed
            }
        )
        if not_proven:
            yield ""
            yield "NOT PROVEN (no test passed): " + ", ".join(not_proven)
        for problem in self.problems:
            yield f"FAILED: {problem}"
        yield ""
        yield f"wall time {time.monotonic() - self.started:.1f}s"

    def totals(self) -> str:
        counts: Counter[str] = Counter()
        for row in self.rows().values():
            counts["passed"] += row.passed
            counts["failed"] += row.failed
            counts["skipped"] += row.skipped
        return f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped"

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.config.option.collectonly:
            return
        if not (self.tests or self.collect_problems):
            for problem in self.problems:
                terminalreporter.write_line(f"FAILED: {problem}")
            return
        terminalreporter.section("unimq test summary: tier x suite x backend", sep="=")
        for line in self.lines():
            terminalreporter.write_line(line)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if config.option.collectonly or not (self.tests or self.collect_problems):
            return
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(self.totals())


_SUITE_PROPERTY = "unimq-suite"


def _suite_from(report: pytest.TestReport) -> Suite | None:
    """The suite a pytest-xdist worker attached to a report (its setup phase carries it)."""
    for name, value in report.user_properties:
        if name == _SUITE_PROPERTY:
            tier, suite, backend = value
            return Suite(str(tier), str(suite), str(backend))
    return None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--unimq-require-tiers",
        dest="unimq_require_tiers",
        default="",
        help="comma-separated tiers (quick, store, realbroker) that must each pass at least "
        "one test, else the run fails (scripts/test.sh passes all three under CI=true)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SummaryPlugin(config), "unimq-test-summary")
