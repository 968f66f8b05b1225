"""SQL idempotency store and transactional outbox for unimq (``pip install 'unimq[sql]'``):
SQLAlchemy 2 (asyncio).

``Broker(url, idempotency_store="postgresql://user:password@host/db")`` uses it once this
package is installed. Its point is :func:`mark_handled` / :func:`amark_handled`, which write
the "handled" mark inside the handler's own transaction. See docs/idempotency-stores.md.

:class:`SQLOutbox` writes messages in the caller's transaction and relays the committed ones
(``Broker(url, outbox=outbox)``); see docs/consistency.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .outbox import OutboxStatus, OutboxUsageError, SQLOutbox, sqlite_engine
    from .outbox_table import DEFAULT_OUTBOX_TABLE, outbox_metadata, outbox_table
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
    "DEFAULT_OUTBOX_TABLE",
    "DEFAULT_TABLE_NAME",
    "AlreadyHandledError",
    "OutboxStatus",
    "OutboxUsageError",
    "SQLIdempotencyStore",
    "SQLOutbox",
    "amark_handled",
    "idempotency_table",
    "mark_handled",
    "metadata",
    "outbox_metadata",
    "outbox_table",
    "sqlite_engine",
]

_OUTBOX = {
    "OutboxStatus": "outbox",
    "OutboxUsageError": "outbox",
    "SQLOutbox": "outbox",
    "sqlite_engine": "outbox",
    "DEFAULT_OUTBOX_TABLE": "outbox_table",
    "outbox_metadata": "outbox_table",
    "outbox_table": "outbox_table",
}


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the plugin does not need SQLAlchemy installed.
    if name in _OUTBOX:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_OUTBOX[name]}"), name)
    if name in __all__:
        from . import store

        return getattr(store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
