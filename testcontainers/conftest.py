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
