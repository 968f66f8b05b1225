"""The test tiers and the closing summary table (scripts/pytest_plugins), run on small projects
with pytester: classification by fixture, the markers ``--quick`` and ``-m kafka`` rely on, the
table and its plain last line, and the ``CI=true`` rules that keep a skipped real broker from
passing."""

from __future__ import annotations

from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parents[1] / "scripts" / "pytest_plugins"

CONFTEST = f"""
import sys
import pytest

sys.path.insert(0, {str(PLUGINS)!r})
pytest_plugins = ["unimq_test_tiers", "unimq_test_summary"]


@pytest.fixture(scope="session")
def kafka_broker():
    pytest.skip("real broker unavailable: no Docker")


@pytest.fixture(scope="session", params=["3.13"])
def rabbitmq_tls_broker(request):
    return request.param


@pytest.fixture(scope="session")
def redis_server():
    return "redis://127.0.0.1:1"


@pytest.fixture
def memory_broker():
    return "memory://"
"""

TESTS = """
import pytest

def test_unit():
    pass

def test_memory_fixture_is_not_a_real_broker(memory_broker):
    pass

def test_kafka(kafka_broker):
    pass

def test_rabbitmq_tls(rabbitmq_tls_broker):
    pass

def test_redis_store(redis_server):
    pass

@pytest.mark.realbroker
@pytest.mark.parametrize("real", ["rocketmq"])
def test_operations(real):
    pass
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.delenv("CI", raising=False)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_mixed=TESTS)
    return pytester


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # In process, and without the plugins these throwaway projects do not use: fast.
    quiet = ("no:cacheprovider", "no:asyncio", "no:hypothesispytest", "no:timeout")
    return pytester.runpytest_inprocess(*(a for p in quiet for a in ("-p", p)), *args)


def test_table_names_every_tier_suite_and_backend_and_ends_with_the_totals(
    project: pytest.Pytester,
) -> None:
    result = _run(project)
    result.assert_outcomes(passed=5, skipped=1)
    result.stdout.re_match_lines(
        [
            r"tier +suite +backend +passed +failed +skipped +time",
            r"quick +unit +- +2 +0 +0 +\d+\.\ds",
            r"store +mixed +redis +1 +0 +0 ",
            r"realbroker +mixed +kafka +0 +0 +1 ",
            r"realbroker +mixed +rabbitmq tls 3\.13 +1 +0 +0 ",
            r"realbroker +mixed +rocketmq +1 +0 +0 ",
        ],
        consecutive=False,
    )
    result.stdout.fnmatch_lines(
        ["*realbroker mixed kafka: 1 x real broker unavailable: no Docker", "NOT PROVEN*kafka*"]
    )
    assert result.outlines[-1] == "5 passed, 0 failed, 1 skipped"


def test_markers_select_the_quick_tier_and_one_backend(project: pytest.Pytester) -> None:
    quick = _run(project, "-m", "not realbroker and not store")
    quick.assert_outcomes(passed=2, deselected=4)
    kafka = _run(project, "-m", "kafka")
    kafka.assert_outcomes(skipped=1, deselected=5)
    rabbitmq = _run(project, "-m", "rabbitmq")
    rabbitmq.assert_outcomes(passed=1, deselected=5)


def test_under_ci_a_skipped_real_broker_test_fails(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    result = _run(project)
    result.assert_outcomes(passed=5, errors=1)
    result.stdout.fnmatch_lines(["*CI=true: a realbroker test may not be skipped*no Docker*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert result.outlines[-1] == "5 passed, 1 failed, 0 skipped"


def test_under_ci_a_shared_case_may_declare_a_capability_skip(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    pytester.makeconftest(
        CONFTEST.replace('pytest.skip("real broker unavailable: no Docker")', 'return "kafka"')
    )
    pytester.makepyfile(
        test_capability="""
        import pytest

        def test_lag(kafka_broker):
            pytest.skip("the kafka:// transport does not implement the optional SPI SupportsLag")

        test_lag.__module__ = "unimq.testing.conformance.cases_operations"

        def test_own(kafka_broker):
            pytest.skip("not declared by a shared case")
        """
    )
    result = _run(pytester)
    result.assert_outcomes(skipped=1, failed=1)
    result.stdout.fnmatch_lines(["*realbroker conformance kafka: 1 x *SupportsLag"])


def test_under_ci_a_module_skipped_at_collection_fails(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_client="""
        import pytest
        pytest.importorskip("no_such_broker_client_xyz")

        def test_publish(kafka_broker):
            pass
        """
    )
    monkeypatch.delenv("CI", raising=False)
    assert _run(pytester).ret == pytest.ExitCode.NO_TESTS_COLLECTED  # a quiet skip
    monkeypatch.setenv("CI", "true")
    result = _run(pytester)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*CI=true: a test module may not be skipped at collection*"])


def test_a_required_tier_that_passed_nothing_fails_the_run(project: pytest.Pytester) -> None:
    result = _run(project, "--unimq-require-tiers=quick,store,realbroker")
    assert result.ret == pytest.ExitCode.OK
    result = _run(project, "--unimq-require-tiers=quick,store,realbroker", "-k", "test_unit")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["FAILED: required tier 'store' passed no test*"])


def test_no_tests_selected_with_required_tiers_is_a_failure_not_exit_5(
    project: pytest.Pytester,
) -> None:
    plain = _run(project, "-k", "no_such_test")
    assert plain.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    required = _run(project, "--unimq-require-tiers=quick", "-k", "no_such_test")
    assert required.ret == pytest.ExitCode.TESTS_FAILED


def test_under_xdist_the_table_and_the_ci_rules_are_the_same(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """scripts/test.sh runs ``-n 2 --dist loadgroup``: the controller collects nothing, so the
    workers send each test's tier, suite and backend with its reports."""
    monkeypatch.setenv("CI", "true")
    quiet = ("no:cacheprovider", "no:asyncio", "no:hypothesispytest", "no:timeout")
    args = [a for p in quiet for a in ("-p", p)]
    result = project.runpytest_subprocess(
        *args, "-n", "2", "--dist", "loadgroup", "--unimq-require-tiers=quick,store,realbroker"
    )
    result.stdout.re_match_lines(
        [
            r"quick +unit +- +2 +0 +0 ",
            r"store +mixed +redis +1 +0 +0 ",
            r"realbroker +mixed +kafka +0 +1 +0 ",
            r"realbroker +mixed +rabbitmq tls 3\.13 +1 +0 +0 ",
        ],
        consecutive=False,
    )
    result.stdout.fnmatch_lines(["*CI=true: a realbroker test may not be skipped*no Docker*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert result.outlines[-1] == "5 passed, 1 failed, 0 skipped"


def test_real_broker_tests_are_grouped_per_broker_for_xdist(project: pytest.Pytester) -> None:
    """One worker runs all of a broker's tests (its containers start once); store tests are not
    grouped (their servers are cheap to start on each worker)."""
    project.makepyfile(
        test_groups="""
def test_a(kafka_broker):
    pass

def test_a2(kafka_broker):
    pass

def test_b(rabbitmq_tls_broker, redis_server):
    pass

def test_c(redis_server):
    pass
"""
    )
    quiet = ("no:cacheprovider", "no:asyncio", "no:hypothesispytest", "no:timeout")
    args = [a for p in quiet for a in ("-p", p)]
    result = project.runpytest_subprocess(*args, "-n", "2", "--dist", "loadgroup", "-v")
    text = result.stdout.str()
    assert "test_groups.py::test_a@kafka" in text
    assert "test_groups.py::test_a2@kafka" in text
    assert "test_groups.py::test_b[3.13]@rabbitmq tls 3.13" in text
    assert "test_groups.py::test_c@" not in text
    workers = {
        line.split("]")[0] for line in result.outlines if "::test_a" in line and "[gw" in line
    }
    assert len(workers) == 1, workers


def test_under_ci_a_declared_capability_skip_in_setup_is_allowed(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shared cases' ``requirements`` fixture skips, in setup, a case whose ``requires(...)``
    the backend lacks (RabbitMQ has no transactions): declared, not a missing broker. A skip in
    setup without that reason still fails."""
    monkeypatch.setenv("CI", "true")
    project.makepyfile(
        test_capability="""
import pytest

@pytest.fixture
def requirements(kafka_broker_ok):
    pytest.skip("the amqp:// backend does not offer transactions (requires(...))")

@pytest.fixture
def other(kafka_broker_ok):
    pytest.skip("no Docker")

@pytest.fixture(scope="session")
def kafka_broker_ok():
    return "kafka"

@pytest.mark.realbroker
def test_declared(requirements):
    pass

@pytest.mark.realbroker
def test_missing(other):
    pass

test_declared.__module__ = "unimq.testing.conformance.cases_fake"
test_missing.__module__ = "unimq.testing.conformance.cases_fake"
"""
    )
    result = _run(project, "test_capability.py")
    result.assert_outcomes(skipped=1, errors=1)
    result.stdout.fnmatch_lines(["*CI=true: a realbroker test may not be skipped*no Docker*"])


def test_clusters_share_one_group_and_a_fixtureless_test_joins_its_primary_broker(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every multi-node cluster runs on one worker, one after the other (two at once loaded a
    2-core CI machine to load average 100); a test that reaches a broker without its fixture
    (a parameter names the kind) joins the primary version's group, so the other worker does
    not start a second container of it."""
    import unimq_test_tiers

    monkeypatch.setitem(unimq_test_tiers.PRIMARY_VERSIONS, "rocketmq", "5.5.0")
    project.makeconftest(
        CONFTEST
        + """

@pytest.fixture(scope="module")
def kafka_cluster_broker():
    return "kafka://127.0.0.1:1"


@pytest.fixture(scope="module")
def rabbitmq_cluster_broker():
    return "amqp://127.0.0.1:1"
"""
    )
    project.makepyfile(
        test_groups="""
import pytest

def test_kafka_cluster(kafka_cluster_broker):
    pass

def test_rabbitmq_cluster(rabbitmq_cluster_broker):
    pass

@pytest.mark.realbroker
@pytest.mark.parametrize("real", ["rocketmq"])
def test_operations(real):
    pass
"""
    )
    quiet = ("no:cacheprovider", "no:asyncio", "no:hypothesispytest", "no:timeout")
    items, _ = project.inline_genitems(*(a for p in quiet for a in ("-p", p)), "test_groups.py")
    groups = {}
    for item in items:
        marker = item.get_closest_marker("xdist_group")
        groups[item.name] = marker.kwargs["name"] if marker is not None else None
    assert groups == {
        "test_kafka_cluster": "clusters",
        "test_rabbitmq_cluster": "clusters",
        "test_operations[rocketmq]": "rocketmq 5.5.0",
    }
