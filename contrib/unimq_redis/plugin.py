"""Registers the ``redis://`` and ``rediss://`` idempotency stores (``unimq`` entry points).

The redis client is imported only when a store is created, so an installation without the
``redis`` extra still loads this plugin; using the scheme then says which extra to install.
"""

from __future__ import annotations

import importlib

from unimq.errors import MissingDependencyError
from unimq.hookspecs import hookimpl
from unimq.idempotency import IdempotencyStore
from unimq.plugins import IdempotencyStoreRegistry


def create_store(url: str) -> IdempotencyStore:
    """``factory(url_string)`` for :class:`~unimq.plugins.IdempotencyStoreRegistry`."""
    try:
        importlib.import_module("redis.asyncio")
    except ImportError:
        raise MissingDependencyError(
            "the redis:// idempotency store needs the redis client: pip install 'unimq[redis]'"
        ) from None
    from .store import RedisIdempotencyStore

    return RedisIdempotencyStore.from_url(url)


@hookimpl
def unimq_register_idempotency_stores(registry: IdempotencyStoreRegistry) -> None:
    registry.add("redis", create_store)
    registry.add("rediss", create_store)
