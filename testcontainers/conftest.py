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
    rabbitmq_broker,
    rocketmq_broker,
    version_params,
)


def pytest_configure(config):
    config.addinivalue_line("markers", REALBROKER_MARKER)


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
