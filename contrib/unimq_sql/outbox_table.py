"""The outbox table: one row per message written by :meth:`SQLOutbox.publish`.

``unimq_outbox`` (the name is configurable)::

    id            bigint        primary key, autoincrement: the relay's order
    message_id    varchar(255)  not null    the receipt's id (``unimq-id`` on the wire)
    topic         varchar(255)  not null
    msg_key       varchar(255)              the publish ``key`` (ordering and partitioning)
    body          bytea/blob    not null    the encoded body, exactly as Broker.publish sends it
    headers       text          not null    JSON object: the wire headers, bookkeeping included
    content_type  varchar(255)
    due_ms        bigint                    epoch milliseconds a delayed message is due
    state         varchar(7)    not null    'pending', 'sent' or 'failed'
    created_at    timestamptz   not null    when publish wrote it (the writer's UTC clock)
    done_at       timestamptz               when it was sent, or given up on
    error         text                      why it failed ('failed' rows)

Two partial indexes cover the relay's queries on pending rows only, so sent rows kept for the
retention period do not slow it down: ``(id) WHERE state = 'pending'`` and
``(msg_key, id) WHERE state = 'pending'``; ``done_at`` is indexed for the purge.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)

DEFAULT_OUTBOX_TABLE = "unimq_outbox"
PENDING = "pending"
SENT = "sent"
FAILED = "failed"

#: Metadata holding the default outbox table, for migrations (e.g. Alembic's target_metadata).
outbox_metadata = MetaData()


def outbox_table(name: str = DEFAULT_OUTBOX_TABLE, meta: MetaData | None = None) -> Table:
    """The outbox table named ``name`` in ``meta`` (default :data:`outbox_metadata`); the
    existing one when ``meta`` already has it."""
    meta = outbox_metadata if meta is None else meta
    existing = meta.tables.get(name)
    if existing is not None:
        return existing
    pending = text(f"state = '{PENDING}'")
    return Table(
        name,
        meta,
        # SQLite autoincrements only an INTEGER PRIMARY KEY.
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("message_id", String(255), nullable=False),
        Column("topic", String(255), nullable=False),
        Column("msg_key", String(255), nullable=True),
        Column("body", LargeBinary, nullable=False),
        Column("headers", Text, nullable=False),
        Column("content_type", String(255), nullable=True),
        Column("due_ms", BigInteger, nullable=True),
        Column("state", String(7), nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("done_at", DateTime(timezone=True), nullable=True),
        Column("error", Text, nullable=True),
        Index(f"ix_{name}_pending", "id", postgresql_where=pending, sqlite_where=pending),
        Index(
            f"ix_{name}_pending_key",
            "msg_key",
            "id",
            postgresql_where=pending,
            sqlite_where=pending,
        ),
        Index(f"ix_{name}_done_at", "done_at"),
    )
