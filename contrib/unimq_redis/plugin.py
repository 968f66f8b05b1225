"""Registers ``redis://`` and ``rediss://`` (``unimq`` entry points): the idempotency store and
the shared rate limiter (``RateLimit(..., shared="redis://...")``).

The redis client is imported only when a store is created, so an installation without the
``redis`` extra still loads this plugin; using the scheme then says which extra to install.
"""

from __future__ import annotations

import importlib

from unimq.errors import MissingDependencyError
from unimq.hookspecs import hookimpl
from unimq.idempotency import IdempotencyStore
from unimq.plugins import IdempotencyStoreRegistry, RateLimiterRegistry
from unimq.ratelimit import RateLimit, RateLimiter


def _need_client(what: str) -> None:
    try:
        importlib.import_module("redis.asyncio")
    except ImportError:
        raise MissingDependencyError(
            f"the redis:// {what} needs the redis client: pip install 'unimq[redis]'"
        ) from None


def create_store(url: str) -> IdempotencyStore:
    """``factory(url_string)`` for :class:`~unimq.plugins.IdempotencyStoreRegistry`."""
    _need_client("idempotency store")
    from .store import RedisIdempotencyStore

    return RedisIdempotencyStore.from_url(url)


def create_rate_limiter(limit: RateLimit, topic: str, group: str) -> RateLimiter:
    """``factory(limit, topic, group)`` for :class:`~unimq.plugins.RateLimiterRegistry`."""
    _need_client("shared rate limit")
    from .ratelimit import RedisRateLimiter

    return RedisRateLimiter.from_url(limit, topic, group)


@hookimpl
def unimq_register_idempotency_stores(registry: IdempotencyStoreRegistry) -> None:
    registry.add("redis", create_store)
    registry.add("rediss", create_store)


@hookimpl
def unimq_register_rate_limiters(registry: RateLimiterRegistry) -> None:
    registry.add("redis", create_rate_limiter)
    registry.add("rediss", create_rate_limiter)
