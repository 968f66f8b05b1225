"""Redis for unimq (``pip install 'unimq[redis]'``): an idempotency store and a shared rate limit.

``Broker(url, idempotency_store="redis://host:6379/0")`` and
``rate_limit=unimq.RateLimit(200, shared="redis://host:6379/0")`` use it once this package is
installed (it registers ``redis://`` and ``rediss://`` through the ``unimq`` entry-point group).
See docs/idempotency-stores.md and docs/configuration.md ("Rate limits").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .ratelimit import RedisRateLimiter
    from .store import RedisIdempotencyStore

__all__ = ["RedisIdempotencyStore", "RedisRateLimiter"]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the plugin does not need the redis client installed.
    if name == "RedisIdempotencyStore":
        from .store import RedisIdempotencyStore

        return RedisIdempotencyStore
    if name == "RedisRateLimiter":
        from .ratelimit import RedisRateLimiter

        return RedisRateLimiter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
