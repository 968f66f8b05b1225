"""Registers the ``postgresql://`` and ``postgresql+psycopg://`` idempotency stores.

SQLAlchemy and the driver are imported only when a store is created, so an installation
without the ``sql`` extra still loads this plugin; using the scheme then says what to install.
"""

from __future__ import annotations

import importlib

from unimq.errors import MissingDependencyError
from unimq.hookspecs import hookimpl
from unimq.idempotency import IdempotencyStore
from unimq.plugins import IdempotencyStoreRegistry

#: The schemes registered: the ones the test suite runs against a real server.
SCHEMES = ("postgresql", "postgresql+psycopg")


def create_store(url: str) -> IdempotencyStore:
    """``factory(url_string)`` for :class:`~unimq.plugins.IdempotencyStoreRegistry`."""
    for module, what in (
        ("sqlalchemy", "SQLAlchemy"),
        ("greenlet", "greenlet (SQLAlchemy's asyncio support)"),
        ("psycopg", "psycopg 3"),
    ):
        try:
            importlib.import_module(module)
        except ImportError:
            raise MissingDependencyError(
                f"the SQL idempotency store needs {what}: pip install 'unimq[sql]'"
            ) from None
    from .store import SQLIdempotencyStore

    return SQLIdempotencyStore(url)


@hookimpl
def unimq_register_idempotency_stores(registry: IdempotencyStoreRegistry) -> None:
    for scheme in SCHEMES:
        registry.add(scheme, create_store)
