"""Sort every collected test into a tier, a suite and a backend, from what the test uses.

Nothing here lists test files: a new test file is classified by the fixtures it requests, the
directory it lives in and the conformance classes it inherits, so that ``--quick`` never starts
a container and the summary table names every real broker that ran (or did not).

* **tier** ``realbroker``: the test requests a session fixture named ``<kind>[_<variant>]_broker``
  (testcontainers/unimq_brokers), carries the ``realbroker`` marker, or lives under
  ``testcontainers/``. Tier ``store``: it requests a session fixture named
  ``<kind>[_<variant>]_server`` (tests/contrib: Redis, PostgreSQL). Otherwise ``quick``.
* **backend**: the kind of those fixtures (plus the variant and the fixture's parameter, e.g. a
  broker version, when there is one); else a parameter value naming a known backend
  (``test_operations_realbrokers.py``'s ``real`` fixture); else a known backend named by the
  test class or module (``TestToyAdapterConformance``, ``test_memory_backend.py``); else ``-``.
* **suite**: ``conformance`` (or the ``unimq.testing`` module's name) for the shared cases of
  ``unimq.testing``; ``unit`` for the rest of the quick tier; otherwise the module name without
  ``test_`` and without backend names (``test_faults_kafka.py`` -> ``faults``).

Each test gets the markers ``realbroker`` or ``store`` and one marker per backend, so
``-m "not realbroker and not store"`` is the quick tier and ``-m kafka`` runs one backend.
The tests are then ordered quick tier first, then by tier and backend, so one backend's
tests run together while its broker is warm (relative order within a backend is kept).

Under pytest-xdist (``scripts/test.sh`` runs ``-n 2 --dist loadgroup``) every real-broker test
also gets an ``xdist_group`` marker named after the brokers it uses (kind and version), so one
worker runs all of a broker's tests and starts its containers once; quick and store tests are
spread over the workers test by test (pytest-xdist hands out the largest groups first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

TIERS = ("quick", "store", "realbroker")
REALBROKER = "realbroker"
STORE = "store"
QUICK = "quick"

#: Backends a test may name without requesting a backend fixture (in a parameter, its class
#: or module name). Backends found through fixtures are added to this set as they are seen.
KNOWN_BACKENDS = {"memory", "toy", "rabbitmq", "kafka", "rocketmq", "redis", "postgres"}

_BACKEND_FIXTURE = re.compile(
    r"^(?P<kind>[a-z0-9]+)(?:_(?P<variant>[a-z0-9_]+?))?_(?P<role>broker|server)$"
)
_ROLE_TIER = {"broker": REALBROKER, "server": STORE}
_SMOKE_WORDS = {"realbroker", "realbrokers"}


@dataclass(frozen=True, order=True)
class Suite:
    """Where one test belongs in the summary table."""

    tier: str
    suite: str
    backend: str

    def sort_key(self) -> tuple[int, str]:
        return (TIERS.index(self.tier), "" if self.tier == QUICK else self.backend)


SUITE_KEY = pytest.StashKey[Suite]()


def _fixture_scope(item: pytest.Item, name: str) -> str | None:
    """The scope of fixture ``name`` as ``item`` sees it (None when pytest does not say)."""
    info = getattr(item, "_fixtureinfo", None)
    defs = getattr(info, "name2fixturedefs", {}).get(name) if info is not None else None
    if not defs:
        return None
    return str(getattr(defs[-1], "scope", None) or "") or None


def _backend_fixtures(item: pytest.Item) -> list[tuple[str, str]]:
    """(backend label, tier) for each session- or module-scoped (clusters) ``*_broker`` /
    ``*_server`` fixture used."""
    found: list[tuple[str, str]] = []
    params: dict[str, Any] = getattr(getattr(item, "callspec", None), "params", {})
    for name in getattr(item, "fixturenames", ()):
        match = _BACKEND_FIXTURE.match(name)
        if match is None or _fixture_scope(item, name) not in (None, "session", "module"):
            continue
        label = match["kind"]
        if match["variant"]:
            label += f" {match['variant'].replace('_', '-')}"
        if name in params:
            label += f" {params[name]}"
        found.append((label, _ROLE_TIER[match["role"]]))
    return found


def _named_backend(item: pytest.Item) -> str | None:
    params: dict[str, Any] = getattr(getattr(item, "callspec", None), "params", {})
    for value in params.values():
        if isinstance(value, str) and value in KNOWN_BACKENDS:
            return value
    cls = getattr(item, "cls", None)
    module = getattr(item, "module", None)
    names = [cls.__name__ if cls is not None else "", getattr(module, "__name__", "")]
    for name in names:
        lowered = name.lower()
        for backend in sorted(KNOWN_BACKENDS):
            if backend in lowered:
                return backend
    return None


def shared_cases_module(item: pytest.Item) -> str | None:
    """``conformance`` / ``idempotency`` when the test is one of ``unimq.testing``'s cases."""
    module = getattr(getattr(item, "obj", None), "__module__", "") or ""
    parts = module.split(".")
    if parts[:2] == ["unimq", "testing"] and len(parts) > 2:
        return parts[2]
    return None


def module_suite(path: Path) -> str:
    words = path.stem.removeprefix("test_").split("_")
    kept = [w for w in words if w not in KNOWN_BACKENDS and w not in _SMOKE_WORDS]
    if kept:
        return "_".join(kept)
    return "smoke" if any(w in _SMOKE_WORDS for w in words) else path.stem


def is_under(path: Path, root: Path, directory: str) -> bool:
    try:
        return path.resolve().relative_to(root.resolve()).parts[:1] == (directory,)
    except ValueError:
        return False


def classify(item: pytest.Item) -> Suite:
    """The tier, suite and backend of one collected test (see the module docstring)."""
    fixtures = _backend_fixtures(item)
    tiers = {tier for _, tier in fixtures}
    in_testcontainers = is_under(item.path, item.config.rootpath, "testcontainers")
    if REALBROKER in tiers or item.get_closest_marker(REALBROKER) or in_testcontainers:
        tier = REALBROKER
    elif STORE in tiers:
        tier = STORE
    else:
        tier = QUICK
    backend = "+".join(sorted({label for label, _ in fixtures})) or _named_backend(item) or "-"
    shared = shared_cases_module(item)
    if shared is not None:
        suite = shared
    elif tier == QUICK:
        suite = "unit"
    else:
        suite = module_suite(item.path)
    return Suite(tier=tier, suite=suite, backend=backend)


def _register(config: pytest.Config, marker: str, doc: str) -> None:
    registered = {line.split(":")[0].split("(")[0].strip() for line in config.getini("markers")}
    if marker not in registered:
        config.addinivalue_line("markers", f"{marker}: {doc}")


#: The one xdist group of every test that runs a multi-node cluster.
CLUSTERS_GROUP = "clusters"

#: kind -> primary broker version, filled by testcontainers/conftest.py. A test that reaches a
#: broker without the fixture (``request.getfixturevalue``, or a parameter naming the kind) uses
#: the primary version's container, so it joins that version's group: otherwise the other
#: worker could start a second container of the same broker and keep it to the end.
PRIMARY_VERSIONS: dict[str, str] = {}


def xdist_group(item: pytest.Item, suite: Suite) -> str | None:
    """The xdist group of a real-broker test: the brokers it starts (store servers are cheap to
    start twice, brokers are not). ``None`` for the quick and store tiers."""
    if suite.tier != REALBROKER:
        return None
    brokers = sorted({label for label, tier in _backend_fixtures(item) if tier == REALBROKER})
    if any(" cluster" in label for label in brokers):
        # Every multi-node cluster on one worker, one after the other (each is stopped at the
        # end of its module): two clusters at once (six JVMs) on a 2-core machine slowed
        # every other test of the run several times over.
        return CLUSTERS_GROUP
    if brokers:
        return "+".join(brokers)
    named = _named_backend(item) or suite.backend
    if named in PRIMARY_VERSIONS:
        return f"{named} {PRIMARY_VERSIONS[named]}"
    return suite.backend


def pytest_configure(config: pytest.Config) -> None:
    _register(config, REALBROKER, "needs a real broker (tier realbroker; added automatically)")
    _register(config, "xdist_group", "pytest-xdist: run these tests on one worker")
    _register(config, STORE, "needs a real store server such as Redis or PostgreSQL (tier store)")


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by the markers added here
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:  # first learn every backend a fixture names, then classify
        KNOWN_BACKENDS.update(label.split(" ")[0] for label, _ in _backend_fixtures(item))
    for item in items:
        suite = classify(item)
        item.stash[SUITE_KEY] = suite
        if suite.tier != QUICK and not item.get_closest_marker(suite.tier):
            item.add_marker(suite.tier)
        for backend in {b.split(" ")[0] for b in suite.backend.split("+")} - {"-"}:
            _register(config, backend, f"runs on the {backend} backend (added automatically)")
            item.add_marker(backend)
        group = xdist_group(item, suite)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(name=group))
    items.sort(key=lambda item: item.stash[SUITE_KEY].sort_key())  # stable: keeps file order
