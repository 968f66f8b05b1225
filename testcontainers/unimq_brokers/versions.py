"""Which broker versions the real-broker tests run, and which tests run on each.

``testcontainers/images/versions.env`` is the one list: build-images.sh builds one image per
entry, the fixtures take the version as their parameter, and the "Supported broker versions"
tables in README.md and docs/backends/*.md are checked against it
(``testcontainers/tests/test_supported_versions.py``). Each list is newest first; its first
entry is the broker's *primary* version:

* every real-broker test runs on the primary version (the fixtures' default);
* the other versions run the smoke set only: the raw-client smoke tests
  (``test_realbroker_*``) and the conformance cases in :data:`SMOKE_CASES`.

``UNIMQ_TEST_BROKER_VERSIONS=primary`` limits a run to the primary versions (useful while
developing a feature); the default, ``all``, runs the matrix. In external mode
(``UNIMQ_TEST_BROKERS=external``) there is one broker per kind, taken to be the primary version.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from . import config

T = TypeVar("T")

VERSIONS_ENV = config.TESTCONTAINERS_DIR / "images" / "versions.env"

_LIST_VARS = {
    "rabbitmq": "RABBITMQ_VERSIONS",
    "kafka": "KAFKA_VERSIONS",
    "rocketmq": "ROCKETMQ_VERSIONS",
}

#: Conformance cases run on every version, not only the primary one. Chosen to touch what
#: differs between broker releases: topology declaration (queues, consumer groups, exclusive
#: broadcast queues), retry and dead-letter routing, delays, ordering, durability across a
#: restart, redelivery of unsettled messages, and the operations commands (lag, dead letters).
SMOKE_CASES = frozenset(
    {
        "test_publish_receipt_id_reaches_the_handler",
        "test_key_and_headers_round_trip",
        "test_competing_consumers_share_a_group",
        "test_every_group_gets_every_message",
        "test_broadcast_reaches_every_instance",
        "test_unsettled_manual_message_is_redelivered",
        "test_retry_until_success_keeps_id_and_counts_attempts",
        "test_exhausted_retries_dead_letter_with_diagnostics",
        "test_dead_letter_can_be_replayed",
        "test_delay_is_honoured",
        "test_same_key_in_order_different_keys_concurrently",
        "test_published_message_survives_restart",
        "test_lag_counts_unconsumed_messages",
        "test_dead_letters_list_replay_round_trip",
    }
)

#: Conformance cases run on the secured brokers (TLS and authentication, e.g.
#: ``rabbitmq_secure_broker``): publish, consume, competing consumers, retry and dead letters.
#: A subset of :data:`SMOKE_CASES`; :func:`only_cases` applies it to a suite class.
SECURITY_SMOKE_CASES = frozenset(
    {
        "test_publish_receipt_id_reaches_the_handler",
        "test_key_and_headers_round_trip",
        "test_competing_consumers_share_a_group",
        "test_retry_until_success_keeps_id_and_counts_attempts",
        "test_exhausted_retries_dead_letter_with_diagnostics",
        "test_dead_letter_can_be_replayed",
    }
)

#: Test modules whose every test runs on every version (the raw-client smoke tests).
SMOKE_MODULE_PREFIX = "test_realbroker_"


def read_versions_env(path: Path = VERSIONS_ENV) -> dict[str, str]:
    """The ``KEY=value`` assignments of a versions.env file (shell quoting, no expansion)."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if sep:
            parts = shlex.split(value, comments=True)
            out[key.strip()] = " ".join(parts)
    return out


def entries(kind: str, path: Path = VERSIONS_ENV) -> list[tuple[str, str | None]]:
    """``[(version, debian_suite_or_None), ...]`` for ``kind``, newest first."""
    values = read_versions_env(path)
    raw = values.get(_LIST_VARS[kind], "").split()
    if not raw:
        raise ValueError(f"{path} lists no {_LIST_VARS[kind]}")
    out: list[tuple[str, str | None]] = []
    for item in raw:
        version, _, suite = item.partition("@")
        if kind == "rabbitmq":
            out.append((version, suite or values.get("DEBIAN_SUITE")))
        else:
            out.append((version, None))
    return out


def all_versions(kind: str) -> list[str]:
    """Every version of ``kind`` in versions.env, newest (primary) first."""
    return [v for v, _ in entries(kind)]


def primary(kind: str) -> str:
    """The version the fixtures start by default and the full suites run on."""
    return all_versions(kind)[0]


def matrix(kind: str) -> list[str]:
    """The versions this run covers for ``kind`` (see the module docstring)."""
    choice = os.environ.get("UNIMQ_TEST_BROKER_VERSIONS", "all").strip().lower() or "all"
    if choice not in {"all", "primary"}:
        raise ValueError(f"UNIMQ_TEST_BROKER_VERSIONS must be 'all' or 'primary', not {choice!r}")
    if choice == "primary" or config.mode() == "external":
        return [primary(kind)]
    return all_versions(kind)


def runs_on_every_version(module_name: str, function_name: str, is_conformance: bool) -> bool:
    """True when a test belongs to the smoke set that runs on every version."""
    if module_name.rsplit(".", 1)[-1].startswith(SMOKE_MODULE_PREFIX):
        return True
    return is_conformance and function_name in SMOKE_CASES


def version_id(kind: str, version: str) -> str:
    """The pytest id of a version parameter, e.g. ``rabbitmq-4.0.5``."""
    return f"{kind}-{version}"


def only_cases(cases: frozenset[str]) -> Callable[[type[T]], type[T]]:
    """A class decorator for a conformance suite: every ``test_*`` case not in ``cases`` is
    hidden from collection (pytest skips attributes that are ``None``)."""

    def apply(suite: type[T]) -> type[T]:
        names = {name for name in dir(suite) if name.startswith("test_")}
        if cases - names:
            raise ValueError(f"{suite.__name__} has no cases {sorted(cases - names)}")
        for name in names - cases:
            setattr(suite, name, None)
        return suite

    return apply
