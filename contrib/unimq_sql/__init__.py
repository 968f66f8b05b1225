"""SQL idempotency store for unimq (``pip install 'unimq[sql]'``): SQLAlchemy 2 (asyncio).

``Broker(url, idempotency_store="postgresql://user:password@host/db")`` uses it once this
package is installed. Its point is :func:`mark_handled` / :func:`amark_handled`, which write
the "handled" mark inside the handler's own transaction. See docs/idempotency-stores.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import (
        DEFAULT_TABLE_NAME,
        AlreadyHandledError,
        SQLIdempotencyStore,
        amark_handled,
        idempotency_table,
        mark_handled,
        metadata,
    )

__all__ = [
    "DEFAULT_TABLE_NAME",
    "AlreadyHandledError",
    "SQLIdempotencyStore",
    "amark_handled",
    "idempotency_table",
    "mark_handled",
    "metadata",
]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the plugin does not need SQLAlchemy installed.
    if name in __all__:
        from . import store

        return getattr(store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
