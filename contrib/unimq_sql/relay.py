"""The outbox relay: publishes committed outbox rows durably, then marks them sent.

One database transaction per batch:

1. take up to ``batch_size`` pending rows in id order, ``FOR UPDATE SKIP LOCKED`` on
   PostgreSQL (rows another relay holds are skipped, so several relays share the work);
2. keep, for each key, only the rows that are the key's oldest pending ones: when another relay
   holds an older row of the key, this relay leaves the key alone this round (per-key order);
3. publish each row through the broker's publisher (``Broker.publish``'s own path: same
   headers, same middlewares), rows of one key one after another, different keys concurrently;
4. mark the published rows ``sent`` (or delete them when the retention is 0) and commit.

A relay killed after 3 and before 4 leaves the rows pending (the database rolls its
transaction back when the connection drops): the next relay publishes them again, with the same
``unimq-id``, and idempotent subscribers drop the copies. A row the broker refuses for good
(too large, a delay the backend cannot make, invalid) is marked ``failed`` with the reason and
logged; any other error (broker or database unreachable) stops the batch, keeps the rows
pending and retries after a growing pause (0.5 s up to 30 s).

On PostgreSQL with psycopg, a dedicated connection ``LISTEN``\\ s on the outbox's channel and
:meth:`SQLOutbox.publish` ``NOTIFY``\\ s it at commit, so the relay wakes at once; it also polls
every ``poll_interval`` seconds, the only wake-up elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, String, any_, bindparam, delete, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from unimq.errors import ConfigurationError, MessageTooLargeError
from unimq.publishing import Publisher

from . import urls
from .outbox_table import FAILED, PENDING, SENT

if TYPE_CHECKING:
    from .outbox import OutboxStatus, SQLOutbox

logger = logging.getLogger("unimq.outbox")

#: Errors that publishing the same row again cannot cure: the row is marked failed.
PERMANENT = (MessageTooLargeError, ConfigurationError)
#: Rows of different keys published at once, per batch.
CONCURRENCY = 64
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
PURGE_EVERY = 60.0
STATUS_EVERY = 5.0
BLOCKED_PAUSE = 0.02


class _Aborted(Exception):
    """Raised inside a batch by :meth:`OutboxRelay.stop` with ``abort=True``."""


class OutboxRelay:
    """Relays one :class:`~unimq_sql.SQLOutbox` through one broker's publisher until stopped.

    Counters for monitoring: ``relayed`` (rows published and marked sent), ``failed`` (rows
    given up on) and ``last_status`` (the outbox's :class:`OutboxStatus`, refreshed every few
    seconds).
    """

    def __init__(self, outbox: SQLOutbox, publisher: Publisher) -> None:
        self.outbox = outbox
        self.publisher = publisher
        self.relayed = 0
        self.failed = 0
        self.last_status: OutboxStatus | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._listening = False
        self._taken = 0
        self._aborting = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="unimq-outbox-relay")
        if self.outbox.notify:
            self._listener = asyncio.create_task(self._listen(), name="unimq-outbox-listen")
        logger.info(
            "outbox relay started on %s (table %s, %s)",
            self.outbox.engine.url.render_as_string(hide_password=True),
            self.outbox.table.name,
            "LISTEN/NOTIFY"
            if self.outbox.notify
            else f"polling every {self.outbox.poll_interval}s",
        )

    def wake(self) -> None:
        """Look for rows now instead of at the next poll."""
        self._wake.set()

    def abort(self) -> None:
        """Crash, as far as the outbox can tell: the batch in progress stops before its next
        publish and rolls back (see :meth:`stop`); the relay then ends. Synchronous, so a test
        can abort at an exact point (e.g. from a publish middleware)."""
        self._stopping = True
        self._aborting = True
        self._wake.set()

    async def stop(self, timeout: float = 10.0, *, abort: bool = False) -> None:
        """Let the batch in progress finish (at most ``timeout`` seconds), then stop.

        ``abort=True`` stops the batch in progress (or the next one, if rows are pending)
        after its first publish and rolls its transaction back without marking anything: what
        it had published stays pending and is published again, exactly what a crash between
        publishing and marking leaves behind.
        (Cancelling the task instead could leave a database connection mid-statement.)
        """
        self._stopping = True
        self._aborting = self._aborting or abort
        self._wake.set()
        for task in (self._listener, self._task):
            if task is None:
                continue
            if task is self._listener:
                task.cancel()
            try:
                await asyncio.wait_for(task, timeout)
            except (asyncio.CancelledError, asyncio.TimeoutError):
                pass
            except Exception:  # already logged by the loop
                pass
        logger.info("outbox relay stopped (%d rows relayed)", self.relayed)

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = FIRST_BACKOFF
        next_purge = 0.0
        next_status = 0.0
        while not self._stopping:
            self._wake.clear()
            try:
                handled = await self.relay_batch()
                now = time.monotonic()
                if now >= next_purge and self.outbox.retention > 0:
                    next_purge = now + PURGE_EVERY
                    await self.outbox.purge()
                if now >= next_status:
                    next_status = now + STATUS_EVERY
                    self.last_status = await self.outbox.status()
            except _Aborted:
                return
            except Exception as exc:
                logger.warning(
                    "outbox relay: %s: %s; retrying in %.1fs",
                    type(exc).__name__,
                    self._mask(str(exc)),
                    backoff,
                )
                await self._sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            backoff = FIRST_BACKOFF
            if handled == 0 and self._taken > 0:
                # Every row taken waits behind an older row of its key that another relay
                # holds: give that relay a moment instead of spinning.
                await self._sleep(min(self.outbox.poll_interval, BLOCKED_PAUSE))
            elif self._taken < self.outbox.batch_size:
                await self._sleep(self.outbox.poll_interval)

    async def _sleep(self, seconds: float) -> None:
        if self._stopping:
            return
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def relay_batch(self) -> int:
        """Relay one batch; returns how many rows were sent or marked failed (``_taken`` is
        how many were locked, some possibly left for another relay's older rows)."""
        outbox = self.outbox
        t = outbox.table
        error: BaseException | None = None
        await outbox.ensure_table()
        async with outbox.engine.begin() as conn:
            rows = (
                await conn.execute(
                    select(
                        t.c.id,
                        t.c.message_id,
                        t.c.topic,
                        t.c.msg_key,
                        t.c.body,
                        t.c.headers,
                        t.c.content_type,
                        t.c.due_ms,
                    )
                    .where(t.c.state == PENDING)
                    .order_by(t.c.id)
                    .limit(outbox.batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            self._taken = len(rows)
            if not rows:
                return 0
            groups = await self._key_groups(conn, rows)
            sent: list[int] = []
            failed: list[tuple[int, str]] = []
            errors: list[BaseException] = []
            limit = asyncio.Semaphore(CONCURRENCY)

            async def send_group(group: list[Any]) -> None:
                async with limit:
                    for row in group:
                        if self._aborting and sent:
                            return  # "killed" after publishing, before marking
                        try:
                            await self._send(row)
                        except PERMANENT as exc:
                            failed.append((row.id, f"{type(exc).__name__}: {exc}"[:1000]))
                            logger.error(
                                "outbox row %d (message %s, topic %r) cannot be published and "
                                "is marked failed: %s: %s",
                                row.id,
                                row.message_id,
                                row.topic,
                                type(exc).__name__,
                                exc,
                            )
                            continue
                        except Exception as exc:
                            errors.append(exc)
                            return  # the key's later rows wait for this one
                        sent.append(row.id)

            if len(groups) == 1:
                await send_group(groups[0])
            else:
                await asyncio.gather(*(send_group(group) for group in groups))
            if self._aborting:
                raise _Aborted  # roll back: nothing of this batch is marked
            if errors:
                error = errors[0]
            now = datetime.now(timezone.utc)
            if sent:
                if outbox.retention == 0:
                    await conn.execute(delete(t).where(self._among(t.c.id, sent)))
                else:
                    await conn.execute(
                        update(t).where(self._among(t.c.id, sent)).values(state=SENT, done_at=now)
                    )
            for row_id, reason in failed:
                await conn.execute(
                    update(t)
                    .where(t.c.id == row_id)
                    .values(state=FAILED, done_at=now, error=reason)
                )
        self.relayed += len(sent)
        self.failed += len(failed)
        if sent:
            logger.debug("outbox relay: %d rows relayed", len(sent))
        if error is not None:
            raise error
        return len(sent) + len(failed)

    async def _key_groups(self, conn: AsyncConnection, rows: Sequence[Any]) -> list[list[Any]]:
        """The rows to publish now, grouped: one group per key (in id order), one per keyless
        row. A key whose oldest pending row is held by another relay is left out, and so is
        every row of a key after a gap (a pending row of the key this relay did not take)."""
        by_key: dict[str, list[Any]] = {}
        groups: list[list[Any]] = []
        for row in rows:
            if row.msg_key is None:
                groups.append([row])
            else:
                by_key.setdefault(row.msg_key, []).append(row)
        if not by_key:
            return groups
        t = self.outbox.table
        mine = {row.id for row in rows}
        last = rows[-1].id
        allowed: set[int] = set()
        blocked: set[str] = set()
        keys = list(by_key)
        for start in range(0, len(keys), 500):
            pending = await conn.execute(
                select(t.c.id, t.c.msg_key)
                .where(
                    t.c.state == PENDING,
                    self._among(t.c.msg_key, keys[start : start + 500]),
                    t.c.id <= last,
                )
                .order_by(t.c.id)
            )
            for row_id, key in pending:
                if key in blocked:
                    continue
                if row_id in mine:
                    allowed.add(row_id)
                else:
                    blocked.add(key)  # another relay holds an older row of this key
        for key_rows in by_key.values():
            kept = [row for row in key_rows if row.id in allowed]
            if kept:
                groups.append(kept)
        return groups

    def _among(self, column: Any, values: list[Any]) -> ColumnElement[bool]:
        """``column IN values``; on PostgreSQL ``column = ANY(:array)``, one parameter instead
        of one per value (compiling and parsing 500 placeholders costs more than the query)."""
        if self.outbox.engine.dialect.name != "postgresql":
            return column.in_(values)  # type: ignore[no-any-return]
        element = BigInteger() if isinstance(values[0], int) else String()
        return column == any_(bindparam(None, values, type_=ARRAY(element)))  # type: ignore[no-any-return]

    async def _send(self, row: Any) -> None:
        headers: dict[str, str] = json.loads(row.headers)
        due = None if row.due_ms is None else row.due_ms / 1000
        if due is not None and due > time.time():
            await self.publisher.send(
                row.topic,
                row.body,
                headers,
                key=row.msg_key,
                message_id=row.message_id,
                content_type=row.content_type,
                due=due,
            )
        else:
            await self.publisher.send_now(
                row.topic, bytes(row.body), headers, row.msg_key, row.message_id, row.content_type
            )

    # -- LISTEN/NOTIFY ----------------------------------------------------------------------

    async def _listen(self) -> None:
        """Wake the relay on every NOTIFY of the channel; reconnect after errors."""
        engine = self.outbox.engine
        if engine.dialect.driver != "psycopg":
            logger.info(
                "outbox relay: LISTEN/NOTIFY needs the psycopg driver (this engine uses %s); "
                "polling every %ss",
                engine.dialect.driver,
                self.outbox.poll_interval,
            )
            return
        import psycopg
        from psycopg import sql

        url = engine.url
        params: dict[str, Any] = {
            "host": url.host,
            "port": url.port,
            "user": url.username,
            "password": url.password,
            "dbname": url.database,
        }
        params.update({k: v for k, v in url.query.items() if isinstance(v, str)})
        params = {k: v for k, v in params.items() if v is not None}
        while not self._stopping:
            try:
                connection = await psycopg.AsyncConnection.connect(autocommit=True, **params)
            except Exception as exc:
                logger.warning(
                    "outbox relay: cannot LISTEN (%s: %s); polling, retrying in 5s",
                    type(exc).__name__,
                    self._mask(str(exc)),
                )
                await asyncio.sleep(5)
                continue
            try:
                await connection.execute(
                    sql.SQL("LISTEN {}").format(sql.Identifier(self.outbox.channel))
                )
                self._listening = True
                self._wake.set()  # rows committed before the LISTEN
                async for _ in connection.notifies():
                    self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(
                    "outbox relay: LISTEN connection lost (%s: %s); reconnecting",
                    type(exc).__name__,
                    self._mask(str(exc)),
                )
                await asyncio.sleep(1)
            finally:
                self._listening = False
                try:
                    await asyncio.shield(connection.close())
                except BaseException:
                    pass

    def _mask(self, text: str) -> str:
        return urls.mask(text, self.outbox.engine.url.render_as_string(hide_password=False))
