"""Redis idempotency store for unimq (``pip install 'unimq[redis]'``).

``Broker(url, idempotency_store="redis://host:6379/0")`` uses it once this package is
installed (it registers ``redis://`` and ``rediss://`` through the ``unimq`` entry-point group).
See docs/idempotency-stores.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import RedisIdempotencyStore

__all__ = ["RedisIdempotencyStore"]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the plugin does not need the redis client installed.
    if name == "RedisIdempotencyStore":
        from .store import RedisIdempotencyStore

        return RedisIdempotencyStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
