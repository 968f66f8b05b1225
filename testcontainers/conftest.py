"""pytest setup for the real-broker tests under testcontainers/.

Beware the name: this directory is called ``testcontainers`` like the PyPI
library the fixtures use. It has no ``__init__.py`` and must never get one;
``import testcontainers`` must resolve to the library. Run with
``--import-mode=importlib`` (works with the default mode as well).
"""

from __future__ import annotations

import importlib
import os
import sys

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))


def _restore_pypi_testcontainers() -> None:
    """Undo pytest's shadowing of the PyPI ``testcontainers`` package.

    With ``--import-mode=importlib`` pytest names this file
    ``testcontainers.conftest`` and registers *this directory* as a namespace
    module ``testcontainers`` in ``sys.modules`` before running it, which hides
    the library (``testcontainers.core`` would not import). Put the real
    package there instead and keep pytest's submodules (``testcontainers.conftest``,
    ``testcontainers.tests...``) registered under it.
    """
    current = sys.modules.get("testcontainers")
    if current is None or getattr(current, "__file__", None):
        return  # not imported yet, or already the real (regular) package
    ours = {
        k: v
        for k, v in sys.modules.items()
        if k == "testcontainers" or k.startswith("testcontainers.")
    }
    for k in ours:
        del sys.modules[k]
    real = importlib.import_module("testcontainers")
    if not getattr(real, "__file__", None):
        for k, v in ours.items():
            sys.modules[k] = v
        raise ImportError(
            "the PyPI package 'testcontainers' is not installed (pip install testcontainers)"
        )
    for k, v in ours.items():
        if k == "testcontainers":
            continue
        sys.modules[k] = v
        if k.count(".") == 1:
            setattr(real, k.split(".", 1)[1], v)


_restore_pypi_testcontainers()
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)  # makes `unimq_brokers` importable (not a `testcontainers` package)

from unimq_brokers import KINDS, versions  # noqa: E402
from unimq_brokers.fixtures import (  # noqa: E402,F401
    REALBROKER_MARKER,
    kafka_broker,
    kafka_cluster_broker,
    kafka_secure_broker,
    rabbitmq_broker,
    rabbitmq_cluster_broker,
    rabbitmq_secure_broker,
    rocketmq_broker,
    rocketmq_cluster_broker,
    rocketmq_secure_broker,
    version_params,
)


def _load_store_servers():
    """tests/contrib/servers.py (the real Redis the store tier runs), loaded by path: neither
    directory is a package."""
    import importlib.util

    path = os.path.join(os.path.dirname(_HERE), "tests", "contrib", "servers.py")
    spec = importlib.util.spec_from_file_location("unimq_store_servers", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("unimq_store_servers", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def redis_server():
    """A real Redis (redis-server from scripts/install-stores.sh) for the real-broker tests
    that need one beside the broker (shared rate limits); as tests/contrib's fixture, a
    missing binary skips, and fails under CI=true."""
    servers = _load_store_servers()
    try:
        server = servers.RedisServer.start()
    except servers.ServerUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{exc} (CI=true: the real-broker tests must run)", pytrace=False)
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


def pytest_configure(config):
    config.addinivalue_line("markers", REALBROKER_MARKER)
    try:
        import unimq_test_tiers
    except ImportError:  # run without the repository's conftest.py
        return
    unimq_test_tiers.PRIMARY_VERSIONS.update({kind: versions.primary(kind) for kind in KINDS})


def pytest_generate_tests(metafunc):
    """The broker version is the ``<kind>_broker`` fixtures' parameter: the smoke set
    (``unimq_brokers.versions``) runs on every version of versions.env, every other test on
    the primary (newest) one. The id names the version, e.g. ``test_x[rabbitmq-4.0.5]``."""
    from unimq.testing.conformance import ConformanceSuite

    is_conformance = metafunc.cls is not None and issubclass(metafunc.cls, ConformanceSuite)
    every = versions.runs_on_every_version(
        metafunc.module.__name__, metafunc.function.__name__, is_conformance
    )
    chosen_by_test = {
        arg.strip()
        for mark in metafunc.definition.iter_markers("parametrize")
        for arg in (
            mark.args[0].split(",") if isinstance(mark.args[0], str) else list(mark.args[0])
        )
    }
    for kind in KINDS:
        name = f"{kind}_broker"
        if name in metafunc.fixturenames and name not in chosen_by_test:
            metafunc.parametrize(name, version_params(kind, every), indirect=True, scope="session")


def pytest_collection_modifyitems(config, items):
    """A test class with an ``only_cases`` set runs only those cases (a smoke subset of the
    conformance suite, e.g. over a secured connection); the others are deselected, not
    skipped."""
    keep, drop = [], []
    for item in items:
        only = getattr(getattr(item, "cls", None), "only_cases", None)
        name = getattr(item, "originalname", item.name)
        (drop if only is not None and name not in only else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


# -- RocketMQ 5.5.0's busy loop after transactional messages -------------------------------
# Once a transactional-message workload goes idle, RocketMQ 5.5.0's TransactionalOpBatchService
# thread spins at 100 % of a core until the broker restarts (apache/rocketmq issue 10966, fix
# proposed in pull request 10967: drained entries stay in its deleteContext map and its wait
# becomes 0). On the 2-core CI machine that took one core from the first transaction test to
# the end of the run (seen with top -H: thread "TransactionalOp", 8 CPU minutes while its worker
# ran other brokers' tests). Between transaction tests the thread has nothing to do, so after
# the last of a run of consecutive transaction tests it is moved (cgroup v1 moves single
# threads) into a cgroup of its own with ``cpu.idle`` set, where it runs only on an otherwise
# idle core; before the next transaction test it goes back to its container's cgroup, because
# while transactions run their commit records must be written promptly (broker.conf).
# (SCHED_IDLE on the thread alone does not help: its container's cgroup still competes with
# the other containers at full weight.) Where cgroup v1's cpu controller is missing, nothing
# changes.

_SPINNING_THREAD = "TransactionalOp"
_CPU_CGROUPS = "/sys/fs/cgroup/cpu"
_IDLE_CGROUP = os.path.join(_CPU_CGROUPS, "unimq-spinning-threads")
_home_cgroups = {}  # tid -> the cpu cgroup it came from


def _rocketmq_transaction_key(item):
    """``("rocketmq", version)`` when ``item`` is a transaction test on a RocketMQ container."""
    if item is None or "transaction" not in item.nodeid.lower():
        return None
    if "rocketmq_broker" not in getattr(item, "fixturenames", ()):
        return None
    params = getattr(getattr(item, "callspec", None), "params", {})
    return ("rocketmq", params.get("rocketmq_broker") or versions.primary("rocketmq"))


def _spinning_threads(key):
    """Host thread ids of the op batch threads of the container behind ``key``."""
    from unimq_brokers.fixtures import started_broker

    container = getattr(started_broker(*key), "container", None)
    if container is None:
        return []
    try:
        top = container.get_wrapped_container().top()
        column = top["Titles"].index("PID")
        pids = [int(row[column]) for row in top["Processes"]]
    except Exception:
        return []
    found = []
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as comm:
                    if comm.read().startswith(_SPINNING_THREAD):
                        found.append(tid)
            except OSError:
                continue
    return found


def _cpu_cgroup_of(tid):
    with open(f"/proc/{tid}/cgroup") as table:
        for line in table:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if "cpu" in controllers.split(","):
                return os.path.join(_CPU_CGROUPS, path.lstrip("/"))
    raise OSError(f"thread {tid} has no cpu cgroup")


def _move(tid, cgroup):
    with open(os.path.join(cgroup, "tasks"), "w") as tasks:
        tasks.write(tid)


def _park_op_batch_threads(key, parked):
    """Move the op batch threads into the idle cgroup (``parked``) or back home."""
    try:
        if parked and not os.path.isdir(_IDLE_CGROUP):
            os.mkdir(_IDLE_CGROUP)
            with open(os.path.join(_IDLE_CGROUP, "cpu.idle"), "w") as idle:
                idle.write("1")
        for tid in _spinning_threads(key):
            if parked:
                _home_cgroups.setdefault(tid, _cpu_cgroup_of(tid))
                _move(tid, _IDLE_CGROUP)
            elif tid in _home_cgroups:
                _move(tid, _home_cgroups.pop(tid))
    except OSError:  # no cgroup v1 cpu controller, not root, a thread gone: leave it be
        return


def pytest_runtest_setup(item):
    key = _rocketmq_transaction_key(item)
    if key is not None:
        _park_op_batch_threads(key, parked=False)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    key = _rocketmq_transaction_key(item)
    if key is None or nextitem is None or _rocketmq_transaction_key(nextitem) == key:
        return  # not one, the session ends anyway, or more transaction tests follow
    _park_op_batch_threads(key, parked=True)
