"""Session-wide real servers for the contrib plugin tests (see servers.py).

A server whose binaries are missing skips the tests that need it, with the reason, except
under ``CI=true``, where that is a failure (CI must run them: ``scripts/install-stores.sh``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .servers import PostgresServer, RedisServer, serve

NEEDED_BY = "the real-server store tests"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    yield from serve(RedisServer.start, needed_by=NEEDED_BY)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    yield from serve(PostgresServer.start, needed_by=NEEDED_BY)
