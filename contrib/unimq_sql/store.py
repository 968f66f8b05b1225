"""``SQLIdempotencyStore``: idempotency marks in a SQL table (SQLAlchemy 2, asyncio).

One row per ``(group_name, message_id)`` (the primary key) in ``unimq_idempotency``::

    group_name    varchar(255)  not null  } primary key
    message_id    varchar(255)  not null  }
    state         varchar(8)    not null  'running' (a lease is held) or 'done' (handled)
    token         varchar(32)             the lease holder's random token ('running' rows)
    lease_until   timestamptz             when the lease expires ('running' rows)
    completed_at  timestamptz             when the mark was written ('done' rows; indexed)

- ``begin`` inserts a ``running`` row; the primary key makes exactly one concurrent insert win
  (the losers get an ``IntegrityError``, which is portable across databases). A loser reads
  the row: ``done`` means "already handled"; an expired lease is taken over with one atomic
  ``UPDATE ... WHERE state = 'running' AND lease_until <= now``; a live lease means "wait":
  poll with a growing pause (10 ms up to 250 ms, never past the lease's expiry) and retry.
- ``complete`` turns the row into ``done`` (inserting it if it is gone).
- ``release`` deletes the row only while it is ``running`` with this claimer's token.

Time: on PostgreSQL the lease is measured by the database server's clock (``now()``), so
consumers on hosts with skewed clocks agree; on other databases by each client's UTC clock.

The store's point is :func:`mark_handled` / :func:`amark_handled`: the handler writes the
``done`` mark *inside its own transaction*, so the business write and the mark commit
together, or neither does. Example, with the store as the broker's store::

    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
    from unimq import Broker, Message
    from unimq_sql import SQLIdempotencyStore, amark_handled

    engine = create_async_engine("postgresql+psycopg://app:secret@db/shop")
    Session = async_sessionmaker(engine)
    broker = Broker("amqp://mq", idempotency_store=SQLIdempotencyStore(engine))

    @broker.subscriber("orders", group="billing", idempotent=True)
    async def bill(order: Order, message: Message) -> None:
        async with Session.begin() as session:  # one transaction: commit or roll back both
            session.add(Invoice(order_id=order.id, amount=order.total))
            await amark_handled(session, message.group, message.id)
        # If the process dies here, before the ack, the redelivered copy finds the mark
        # and is acked without running: the invoice exists exactly once.

If the mark is already there (another copy of the message committed first, e.g. after this
run's lease expired), :func:`amark_handled` raises :class:`AlreadyHandledError`; let it
propagate so the transaction rolls back: it is a :class:`~unimq.errors.RetryLater`, and the
retried copy is skipped because its mark exists. See docs/idempotency-stores.md for the exact
guarantees.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import Any, Literal, cast

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Interval,
    MetaData,
    String,
    Table,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from unimq.errors import ConfigurationError, RetryLater
from unimq.idempotency import LeaseTokens
from unimq.url import redact

from . import urls

DEFAULT_TABLE_NAME = "unimq_idempotency"
RUNNING = "running"
DONE = "done"

_FIRST_PAUSE = 0.01
_MAX_PAUSE = 0.25

#: Metadata holding the default table, for schema migrations (e.g. Alembic's target_metadata).
metadata = MetaData()


def idempotency_table(name: str = DEFAULT_TABLE_NAME, meta: MetaData | None = None) -> Table:
    """The idempotency table, named ``name``, in ``meta`` (default: this module's
    :data:`metadata`). Returns the existing one when ``meta`` already has it."""
    meta = metadata if meta is None else meta
    existing = meta.tables.get(name)
    if existing is not None:
        return existing
    return Table(
        name,
        meta,
        Column("group_name", String(255), primary_key=True),
        Column("message_id", String(255), primary_key=True),
        Column("state", String(8), nullable=False),
        Column("token", String(32), nullable=True),
        Column("lease_until", DateTime(timezone=True), nullable=True),
        Column("completed_at", DateTime(timezone=True), nullable=True),
        Index(f"ix_{name}_completed_at", "completed_at"),
    )


#: The default ``unimq_idempotency`` table.
table = idempotency_table()


class AlreadyHandledError(RetryLater):
    """The mark of this message was already written by another run (or another run holds it
    now). The caller's transaction must roll back: let this propagate out of the handler.

    It is a :class:`~unimq.errors.RetryLater`, so the message is retried whatever the
    subscriber's ``retry_on``; the retried copy finds the mark and is acked without running.
    """

    def __init__(self, group: str, message_id: str) -> None:
        super().__init__(
            reason=f"message {message_id!r} of group {group!r} was already handled by another run"
        )
        self.group = group
        self.message_id = message_id


def _table_for(table_or_name: Table | str) -> Table:
    if isinstance(table_or_name, Table):
        return table_or_name
    return idempotency_table(table_or_name)


def _statements(t: Table, group: str, message_id: str) -> tuple[Any, Any]:
    """UPDATE the running row to done (whoever's lease it is), else INSERT a done row."""
    now = datetime.now(timezone.utc)
    to_done = (
        update(t)
        .where(t.c.group_name == group, t.c.message_id == message_id, t.c.state == RUNNING)
        .values(state=DONE, token=None, lease_until=None, completed_at=now)
    )
    new_done = insert(t).values(
        group_name=group, message_id=message_id, state=DONE, completed_at=now
    )
    return to_done, new_done


def mark_handled(
    session_or_connection: Session | Connection,
    group: str,
    message_id: str,
    *,
    table: Table | str = DEFAULT_TABLE_NAME,
) -> None:
    """Write the "handled" mark of ``message_id`` inside the caller's (sync) transaction.

    Commit it together with the handler's business writes: then either both are durable or
    neither is. The pipeline's own ``complete()`` afterwards finds the mark and does nothing.
    Raises :class:`AlreadyHandledError` when the mark already exists (roll back).

    For a sync handler (run in unimq's thread pool)::

        @broker.subscriber("orders", group="billing", idempotent=True)
        def bill(order: Order, message: Message) -> None:
            with SyncSession.begin() as session:
                session.add(Invoice(order_id=order.id, amount=order.total))
                mark_handled(session, message.group, message.id)
    """
    to_done, new_done = _statements(_table_for(table), group, message_id)
    result = cast("CursorResult[Any]", session_or_connection.execute(to_done))
    if result.rowcount == 1:
        return
    try:
        session_or_connection.execute(new_done)
    except IntegrityError:
        raise AlreadyHandledError(group, message_id) from None


async def amark_handled(
    session_or_connection: AsyncSession | AsyncConnection,
    group: str,
    message_id: str,
    *,
    table: Table | str = DEFAULT_TABLE_NAME,
) -> None:
    """:func:`mark_handled` for an ``AsyncSession`` or ``AsyncConnection``."""
    to_done, new_done = _statements(_table_for(table), group, message_id)
    result = cast("CursorResult[Any]", await session_or_connection.execute(to_done))
    if result.rowcount == 1:
        return
    try:
        await session_or_connection.execute(new_done)
    except IntegrityError:
        raise AlreadyHandledError(group, message_id) from None


class SQLIdempotencyStore:
    """Idempotency marks in a SQL table, shared by every consumer of the database.

    ``engine_or_url`` is an ``AsyncEngine`` (the store does not dispose it) or an async URL
    such as ``postgresql+psycopg://user:password@host/db`` (plain ``postgresql://`` means
    psycopg 3). Tested on PostgreSQL.

    - ``table``: the table name (default ``unimq_idempotency``); a ``?table=`` URL parameter
      does the same.
    - ``create_table``: create the table, if missing, on first use (default). Pass False when
      migrations own the schema (:func:`idempotency_table` / :data:`metadata` describe it).
    - ``clock``: ``"server"`` measures leases with the database's ``now()`` (the default on
      PostgreSQL), ``"client"`` with this process's UTC clock (the default elsewhere).

    Marks are kept until :meth:`purge` deletes them: run it now and then
    (``await store.purge(older_than=7 * 86400)``) to keep the table small.
    """

    def __init__(
        self,
        engine_or_url: AsyncEngine | str,
        *,
        table: str = DEFAULT_TABLE_NAME,
        create_table: bool = True,
        clock: Literal["server", "client"] | None = None,
    ) -> None:
        if isinstance(engine_or_url, str):
            url, table = urls.parse(engine_or_url, table, "SQL idempotency store")
            try:
                engine = create_async_engine(url, pool_pre_ping=True)
            except Exception as exc:
                raise ConfigurationError(
                    f"SQL idempotency store: cannot use {redact(engine_or_url)!r}: "
                    f"{type(exc).__name__}: {urls.mask(str(exc), engine_or_url)}"
                ) from None
            self._owns_engine = True
        else:
            engine = engine_or_url
            self._owns_engine = False
        self.engine = engine
        self.table = idempotency_table(table)
        if clock not in (None, "server", "client"):
            raise ConfigurationError(f"clock must be 'server' or 'client', got {clock!r}")
        self._server_clock = clock == "server" if clock else engine.dialect.name == "postgresql"
        self._auto_create = create_table
        self._created = False
        self._create_lock = asyncio.Lock()
        self._tokens = LeaseTokens()

    @classmethod
    def from_url(cls, url: str) -> SQLIdempotencyStore:
        return cls(url)

    # -- the IdempotencyStore protocol ----------------------------------------------------

    async def begin(self, group: str, message_id: str, lease: float) -> bool:
        await self._ensure_table()
        token = uuid.uuid4().hex
        pause = _FIRST_PAUSE
        while True:
            if await self._insert_running(group, message_id, token, lease):
                self._remember(group, message_id, token)
                return True
            # The row exists: look at it until it is done, gone, or ours.
            while True:
                state, remaining = await self._inspect(group, message_id, token, lease)
                if state == DONE:
                    return False
                if state == "claimed":
                    self._remember(group, message_id, token)
                    return True
                if state == "missing":
                    break  # released or purged meanwhile: insert again
                if remaining > 0:  # another consumer's live lease: wait, never past its end
                    await asyncio.sleep(min(pause, remaining))
                    pause = min(pause * 2, _MAX_PAUSE)

    async def _insert_running(self, group: str, message_id: str, token: str, lease: float) -> bool:
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    insert(self.table).values(
                        group_name=group,
                        message_id=message_id,
                        state=RUNNING,
                        token=token,
                        lease_until=self._later(lease),
                    )
                )
        except IntegrityError:
            return False  # the primary key says someone has the row (portable)
        return True

    async def _inspect(
        self, group: str, message_id: str, token: str, lease: float
    ) -> tuple[str, float]:
        """("done"|"missing"|"claimed"|"running", seconds left on the holder's lease); takes
        over an expired lease atomically (one UPDATE conditioned on the expiry)."""
        t = self.table
        where = (t.c.group_name == group, t.c.message_id == message_id)
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(select(t.c.state, t.c.lease_until, self._now()).where(*where))
            ).first()
            if row is None:
                return "missing", 0.0
            state, lease_until, now = row
            if state == DONE:
                return DONE, 0.0
            if lease_until is not None:
                remaining = (urls.aware(lease_until) - urls.aware(now)).total_seconds()
                if remaining > 0:
                    return RUNNING, remaining
            result = await conn.execute(
                update(t)
                .where(
                    *where,
                    t.c.state == RUNNING,
                    or_(t.c.lease_until.is_(None), t.c.lease_until <= self._now()),
                )
                .values(token=token, lease_until=self._later(lease))
            )
            # 0 rows: another claimer took it over or completed it first; look again.
            return ("claimed" if result.rowcount == 1 else RUNNING), 0.0

    async def complete(self, group: str, message_id: str) -> None:
        await self._ensure_table()
        self._tokens.take(group, message_id)
        t = self.table
        where = (t.c.group_name == group, t.c.message_id == message_id)
        for _ in range(5):
            async with self.engine.begin() as conn:
                result = await conn.execute(
                    update(t)
                    .where(*where, t.c.state == RUNNING)
                    .values(state=DONE, token=None, lease_until=None, completed_at=self._now())
                )
                if result.rowcount == 1:
                    return
                if (await conn.execute(select(t.c.state).where(*where))).first() is not None:
                    return  # already done: e.g. marked in the handler's own transaction
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(
                        insert(t).values(
                            group_name=group,
                            message_id=message_id,
                            state=DONE,
                            completed_at=self._now(),
                        )
                    )
                return
            except IntegrityError:
                continue  # a row appeared in between: update it
        raise RuntimeError(f"could not record message {message_id!r} of group {group!r} as done")

    async def release(self, group: str, message_id: str) -> None:
        token = self._tokens.take(group, message_id)
        if token is None:
            return  # not ours (or already completed/released)
        t = self.table
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(t).where(
                    t.c.group_name == group,
                    t.c.message_id == message_id,
                    t.c.state == RUNNING,
                    t.c.token == token,
                )
            )

    # -- in the handler's transaction -----------------------------------------------------

    def mark_handled(
        self, session_or_connection: Session | Connection, group: str, message_id: str
    ) -> None:
        """:func:`mark_handled` on this store's table."""
        mark_handled(session_or_connection, group, message_id, table=self.table)

    async def amark_handled(
        self, session_or_connection: AsyncSession | AsyncConnection, group: str, message_id: str
    ) -> None:
        """:func:`amark_handled` on this store's table."""
        await amark_handled(session_or_connection, group, message_id, table=self.table)

    # -- administration -------------------------------------------------------------------

    async def create_table(self) -> None:
        """Create the table and its index if they do not exist (safe to call concurrently)."""
        try:
            async with self.engine.begin() as conn:
                await conn.run_sync(self.table.create, checkfirst=True)
        except DBAPIError:
            # Another process created it between the check and the CREATE: look again.
            async with self.engine.begin() as conn:
                await conn.run_sync(self.table.create, checkfirst=True)
        self._created = True

    async def purge(self, older_than: float) -> int:
        """Delete marks written more than ``older_than`` seconds ago, and leases that expired
        that long ago; returns how many rows went. A duplicate of a purged message runs again.
        """
        await self._ensure_table()
        t = self.table
        async with self.engine.begin() as conn:
            result = await conn.execute(
                delete(t).where(
                    or_(
                        (t.c.state == DONE) & (t.c.completed_at < self._later(-older_than)),
                        (t.c.state == RUNNING) & (t.c.lease_until < self._later(-older_than)),
                    )
                )
            )
        return int(result.rowcount)

    async def close(self) -> None:
        """Dispose of the engine's connections, if this store created the engine."""
        if self._owns_engine:
            await self.engine.dispose()

    async def __aenter__(self) -> SQLIdempotencyStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:  # never the password
        shown = self.engine.url.render_as_string(hide_password=True)
        return f"SQLIdempotencyStore({shown!r}, table={self.table.name!r})"

    # -- helpers --------------------------------------------------------------------------

    async def _ensure_table(self) -> None:
        if self._created or not self._auto_create:
            return
        async with self._create_lock:
            if not self._created:
                await self.create_table()

    def _now(self) -> ColumnElement[datetime]:
        if self._server_clock:
            return func.now()
        return literal(datetime.now(timezone.utc), DateTime(timezone=True))

    def _later(self, seconds: float) -> ColumnElement[datetime]:
        if self._server_clock:
            return func.now() + literal(timedelta(seconds=seconds), Interval())
        return literal(
            datetime.now(timezone.utc) + timedelta(seconds=seconds), DateTime(timezone=True)
        )

    def _remember(self, group: str, message_id: str, token: str) -> None:
        self._tokens.remember(group, message_id, token)
