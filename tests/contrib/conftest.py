"""Session-wide real servers for the contrib plugin tests (see servers.py).

A server whose binaries are missing skips the tests that need it, with the reason, except
under ``CI=true``, where that is a failure (CI must run them: ``scripts/install-stores.sh``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .servers import PostgresServer, RedisServer, ServerUnavailable


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the real-server store tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    try:
        server = RedisServer.start()
    except ServerUnavailable as exc:
        _unavailable(str(exc))
        raise AssertionError("unreachable") from None
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer.start()
    except ServerUnavailable as exc:
        _unavailable(str(exc))
        raise AssertionError("unreachable") from None
    try:
        yield server
    finally:
        server.stop()
