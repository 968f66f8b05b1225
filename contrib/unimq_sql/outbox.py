"""``SQLOutbox``: publish a message in the caller's database transaction (the transactional
outbox), and relay the committed rows to the broker.

The dual-write problem: an order row that commits while its ``OrderCreated`` event is lost (or
an event sent for a row that rolled back). The outbox writes the event as a row of
``unimq_outbox`` in the same transaction as the order; a relay publishes committed rows and
then marks them sent. Either both the order and its event exist, or neither::

    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
    from unimq import Broker
    from unimq_sql import SQLOutbox

    engine = create_async_engine("postgresql+psycopg://app:secret@db/shop")
    outbox = SQLOutbox(engine)
    broker = Broker("amqp://mq", outbox=outbox)   # relays while connected

    async with AsyncSession(engine) as session, session.begin():
        session.add(order_row)
        receipt = await outbox.publish(session, "orders.created", OrderCreated(...), key="c-7")

Guarantees (docs/consistency.md): every committed row is published at least once, with the
id of its receipt; rows of one key in commit order; a relay killed between the publish and the
mark publishes the row again with the same id (an idempotent subscriber drops the copy).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import Table, delete, event, func, insert, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from unimq.broker import PublishReceipt
from unimq.errors import ConfigurationError, UnimqError
from unimq.url import redact

from . import urls
from .outbox_checks import check_publish
from .outbox_table import DEFAULT_OUTBOX_TABLE, FAILED, PENDING, SENT, outbox_table

if TYPE_CHECKING:
    from unimq import Broker

    from .relay import OutboxRelay

logger = logging.getLogger("unimq.outbox")


class OutboxUsageError(ConfigurationError):
    """The outbox was called the wrong way: outside a transaction, or with a session type the
    method does not take (an ``AsyncSession`` to :meth:`SQLOutbox.publish_sync`, ...)."""


class OutboxStatus(NamedTuple):
    """What ``unimq outbox status`` shows: rows waiting, the age of the oldest one (seconds,
    ``None`` when nothing waits), rows given up on, and sent rows kept for the retention."""

    pending: int
    oldest_age: float | None
    failed: int
    sent: int


class SQLOutbox:
    """The transactional outbox in a SQL table (SQLAlchemy 2; PostgreSQL, or SQLite for
    development and tests).

    ``engine_or_url`` is the relay's database: an ``AsyncEngine`` (not disposed by the outbox)
    or an async URL (``postgresql://`` means psycopg 3, ``sqlite:///`` means aiosqlite).
    :meth:`publish` does not use it: it writes through the caller's session.

    - ``table``: the table name (``unimq_outbox``; a ``?table=`` URL parameter does the same).
    - ``create_table``: the relay creates the table if missing (default); pass False when
      migrations own the schema (:func:`~unimq_sql.outbox_table` describes it). Applications
      that publish before any relay ran call ``await outbox.create_table()`` at start-up.
    - ``batch_size`` (500): rows the relay takes per database transaction.
    - ``poll_interval`` (1 s on PostgreSQL, where LISTEN/NOTIFY wakes the relay; 0.1 s
      elsewhere): how long the relay sleeps when there is nothing to send.
    - ``retention`` (3600 s): how long sent rows are kept before the relay purges them
      (0: deleted at once); failed rows are kept until :meth:`purge` is called with
      ``failed=True``.
    - ``notify`` (True): on PostgreSQL, publish sends ``NOTIFY`` on commit and the relay
      ``LISTEN``\\ s, so it wakes within milliseconds without a busy poll.
    """

    def __init__(
        self,
        engine_or_url: AsyncEngine | str,
        *,
        table: str = DEFAULT_OUTBOX_TABLE,
        create_table: bool = True,
        batch_size: int = 500,
        poll_interval: float | None = None,
        retention: float = 3600.0,
        notify: bool = True,
    ) -> None:
        if isinstance(engine_or_url, str):
            url, table = urls.parse(engine_or_url, table, "SQL outbox")
            try:
                if url.startswith("sqlite"):
                    engine = sqlite_engine(url)
                else:
                    engine = create_async_engine(url, pool_pre_ping=True)
            except Exception as exc:
                raise ConfigurationError(
                    f"SQL outbox: cannot use {redact(engine_or_url)!r}: "
                    f"{type(exc).__name__}: {urls.mask(str(exc), engine_or_url)}"
                ) from None
            self._owns_engine = True
        elif isinstance(engine_or_url, AsyncEngine):
            engine = engine_or_url
            self._owns_engine = False
        else:
            raise ConfigurationError(
                "SQLOutbox needs an AsyncEngine or a database URL, got "
                f"{type(engine_or_url).__name__}"
            )
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigurationError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(retention, (int, float)) or retention < 0:
            raise ConfigurationError(f"retention must be seconds >= 0, got {retention!r}")
        postgres = engine.dialect.name == "postgresql"
        if poll_interval is None:
            poll_interval = 1.0 if postgres and notify else 0.1
        if not isinstance(poll_interval, (int, float)) or poll_interval <= 0:
            raise ConfigurationError(f"poll_interval must be seconds > 0, got {poll_interval!r}")
        self.engine = engine
        self.table: Table = outbox_table(table)
        self.batch_size = batch_size
        self.poll_interval = float(poll_interval)
        self.retention = float(retention)
        self.notify = notify and postgres
        self._auto_create = create_table
        self._created = False
        self._create_lock = asyncio.Lock()
        self._relay: OutboxRelay | None = None

    @property
    def channel(self) -> str:
        """The PostgreSQL NOTIFY channel: the table's name."""
        return self.table.name

    # -- publishing, in the caller's transaction ------------------------------------------

    async def publish(
        self,
        session: AsyncSession | AsyncConnection,
        topic: str,
        body: Any,
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        delay: Any = None,
        deliver_at: datetime | None = None,
        message_id: str | None = None,
    ) -> PublishReceipt:
        """Write the message into the outbox inside ``session``'s open transaction and return
        its receipt (the final id) at once; the relay publishes it after the commit. A
        rollback leaves nothing. Arguments are checked as ``Broker.publish`` checks them
        (:class:`~unimq.errors.InvalidMessageError`); ``delay``/``deliver_at`` count from now.
        """
        if isinstance(session, (Session, Connection)):
            raise OutboxUsageError(
                f"publish takes an AsyncSession or AsyncConnection, got a sync "
                f"{type(session).__name__}: use outbox.publish_sync(...) for sync code"
            )
        if not isinstance(session, (AsyncSession, AsyncConnection)):
            raise OutboxUsageError(
                f"publish takes an AsyncSession or AsyncConnection, got {type(session).__name__}"
            )
        statements, receipt = self._plan(
            session, topic, body, key, headers, delay, deliver_at, message_id
        )
        try:
            for statement in statements:
                await session.execute(statement)
        except DBAPIError as exc:
            if _missing_table(exc):
                raise self._write_error(exc) from None
            raise  # the caller's database error, handled as any other in its transaction
        return receipt

    def publish_sync(
        self,
        session: Session | Connection,
        topic: str,
        body: Any,
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        delay: Any = None,
        deliver_at: datetime | None = None,
        message_id: str | None = None,
    ) -> PublishReceipt:
        """:meth:`publish` for a sync ``Session`` or ``Connection`` (Django, Flask-SQLAlchemy,
        plain-def handlers)."""
        if isinstance(session, (AsyncSession, AsyncConnection)):
            raise OutboxUsageError(
                f"publish_sync takes a sync Session or Connection, got {type(session).__name__}: "
                "use 'await outbox.publish(...)'"
            )
        if not isinstance(session, (Session, Connection)):
            raise OutboxUsageError(
                f"publish_sync takes a Session or Connection, got {type(session).__name__}"
            )
        statements, receipt = self._plan(
            session, topic, body, key, headers, delay, deliver_at, message_id
        )
        try:
            for statement in statements:
                session.execute(statement)
        except DBAPIError as exc:
            if _missing_table(exc):
                raise self._write_error(exc) from None
            raise  # the caller's database error, handled as any other in its transaction
        return receipt

    def _plan(self, session: Any, *arguments: Any) -> tuple[list[Any], PublishReceipt]:
        """The statements that write the row, for either kind of session (in its transaction):
        what ``publish`` and ``publish_sync`` share; only how they execute differs."""
        _require_transaction(session)
        bound = session.get_bind() if isinstance(session, (AsyncSession, Session)) else session
        return self._statements(bound.dialect.name, *arguments)

    def _statements(
        self,
        dialect: str,
        topic: Any,
        body: Any,
        key: Any,
        headers: Any,
        delay: Any,
        deliver_at: Any,
        message_id: Any,
    ) -> tuple[list[Any], PublishReceipt]:
        now = time.time()
        checked = check_publish(
            topic,
            body,
            key=key,
            headers=headers,
            delay=delay,
            deliver_at=deliver_at,
            message_id=message_id,
            now=now,
        )
        due = checked.due
        # The wire headers are Broker.publish's; unimq-deliver-at is added by the relay's
        # publisher from due_ms, as it is for a direct delayed publish.
        wire = checked.wire
        statements: list[Any] = []
        if dialect == "postgresql":
            name = self.table.name
            if checked.key is not None:
                # Writers of one key take turns until commit, so ids of one key are assigned
                # in commit order: the relay's "order by id" is then commit order per key.
                statements.append(
                    text("SELECT pg_advisory_xact_lock(hashtext(:t), hashtext(:k))").bindparams(
                        t=name, k=checked.key
                    )
                )
            if self.notify:
                statements.append(text("SELECT pg_notify(:c, '')").bindparams(c=self.channel))
        statements.append(
            insert(self.table).values(
                message_id=checked.message_id,
                topic=topic,
                msg_key=checked.key,
                body=checked.payload,
                headers=json.dumps(wire, ensure_ascii=False, separators=(",", ":")),
                content_type=checked.content_type,
                due_ms=None if due is None else int(due * 1000),
                state=PENDING,
                created_at=datetime.fromtimestamp(now, tz=timezone.utc),
            )
        )
        deliver_at = None if due is None else datetime.fromtimestamp(due, tz=timezone.utc)
        return statements, PublishReceipt(checked.message_id, topic, deliver_at)

    def _write_error(self, exc: DBAPIError) -> UnimqError:
        return OutboxUsageError(
            f"could not write to the outbox table {self.table.name!r} "
            f"({type(exc.orig).__name__}: {urls.mask(str(exc.orig), self._url())}): create it with "
            "'await outbox.create_table()' or your migrations "
            "(unimq_sql.outbox_table)"
        )

    # -- the relay --------------------------------------------------------------------------

    async def start_relay(self, broker: Broker) -> None:
        """Start relaying committed rows through ``broker`` (``Broker(url, outbox=...)`` calls
        this after connecting)."""
        from .relay import OutboxRelay

        if self._relay is not None:
            raise OutboxUsageError("this SQLOutbox already relays for a connected broker")
        # The table is created by the relay's loop, which retries: an unreachable database
        # delays the relay (with warnings) but never the broker's start.
        relay = OutboxRelay(self, broker.publisher)
        await relay.start()
        self._relay = relay

    async def stop_relay(self, *, abort: bool = False) -> None:
        """Finish the batch in progress and stop (the broker calls this before disconnecting).

        ``abort=True`` stops at once, mid-batch, as a crash would: rows already published in
        the batch stay pending and are published again (tests and demos of the failure
        semantics use it)."""
        relay, self._relay = self._relay, None
        if relay is not None:
            await relay.stop(abort=abort)

    @property
    def relay(self) -> OutboxRelay | None:
        """The running relay, if any (its counters feed the Prometheus metrics)."""
        return self._relay

    # -- administration ---------------------------------------------------------------------

    async def create_table(self) -> None:
        """Create the table and its indexes if they do not exist (safe to call concurrently)."""
        try:
            async with self.engine.begin() as conn:
                await conn.run_sync(self.table.create, checkfirst=True)
        except DBAPIError:
            # Another process created it between the check and the CREATE: look again.
            async with self.engine.begin() as conn:
                await conn.run_sync(self.table.create, checkfirst=True)
        self._created = True

    async def ensure_table(self) -> None:
        if self._created or not self._auto_create:
            return
        async with self._create_lock:
            if not self._created:
                await self.create_table()

    async def status(self) -> OutboxStatus:
        """Backlog, oldest pending row's age, failed rows and retained sent rows."""
        t = self.table
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(t.c.state, func.count(), func.min(t.c.created_at)).group_by(t.c.state)
                )
            ).all()
        counts = {state: (count, oldest) for state, count, oldest in rows}
        pending, oldest = counts.get(PENDING, (0, None))
        age = None
        if oldest is not None:
            age = max(0.0, time.time() - urls.aware(oldest).timestamp())
        return OutboxStatus(
            int(pending), age, int(counts.get(FAILED, (0,))[0]), int(counts.get(SENT, (0,))[0])
        )

    async def purge(self, older_than: float | None = None, *, failed: bool = False) -> int:
        """Delete sent rows done more than ``older_than`` seconds ago (default: the retention)
        and, with ``failed=True``, failed rows as well; returns how many went."""
        seconds = self.retention if older_than is None else older_than
        cutoff = datetime.fromtimestamp(time.time() - seconds, tz=timezone.utc)
        t = self.table
        states = [SENT, FAILED] if failed else [SENT]
        async with self.engine.begin() as conn:
            result = await conn.execute(
                delete(t).where(t.c.state.in_(states), t.c.done_at <= cutoff)
            )
        return int(result.rowcount)

    async def close(self) -> None:
        """Stop the relay and dispose of the engine, if the outbox created it."""
        await self.stop_relay()
        if self._owns_engine:
            await self.engine.dispose()

    async def __aenter__(self) -> SQLOutbox:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _url(self) -> str:
        return self.engine.url.render_as_string(hide_password=False)

    def __repr__(self) -> str:  # never the password
        shown = self.engine.url.render_as_string(hide_password=True)
        return f"SQLOutbox({shown!r}, table={self.table.name!r})"


def sqlite_engine(url: str, *, busy_timeout: float = 30.0, **options: Any) -> AsyncEngine:
    """An aiosqlite ``AsyncEngine`` whose transactions start with ``BEGIN IMMEDIATE``.

    SQLite's default deferred transaction takes the write lock only at its first write, and
    fails at once with "database is locked" when another connection wrote in between (a
    relay's read-then-mark, a handler's read-then-write). ``BEGIN IMMEDIATE`` takes the write
    lock first and waits up to ``busy_timeout`` seconds for it: writers take turns instead of
    failing. SQLite is for development and tests; this makes it dependable there.
    """
    engine = create_async_engine(url, connect_args={"timeout": busy_timeout}, **options)

    @event.listens_for(engine.sync_engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver emits no BEGIN of its own

    @event.listens_for(engine.sync_engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _missing_table(exc: DBAPIError) -> bool:
    text = str(exc.orig).lower()
    return "no such table" in text or ("relation" in text and "does not exist" in text)


def _require_transaction(session: Any) -> None:
    if not session.in_transaction():
        raise OutboxUsageError(
            "outbox.publish must run inside the transaction that writes your data (e.g. "
            "'async with session.begin():'); outside one, the row would not commit with it"
        )
