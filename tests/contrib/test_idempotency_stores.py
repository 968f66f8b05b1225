"""The idempotency stores against real servers: the shared conformance cases for the memory,
Redis and PostgreSQL stores, then what is particular to each (URL options, passwords, the
in-transaction mark of the SQL store, and the crash guarantees of docs/idempotency-stores.md).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from sqlalchemy import Column, Engine, MetaData, String, Table, create_engine, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session
from unimq_redis import RedisIdempotencyStore
from unimq_sql import (
    AlreadyHandledError,
    SQLIdempotencyStore,
    amark_handled,
    mark_handled,
)
from unimq_sql.store import table as idempotency_table

from unimq import Broker, ConfigurationError, Message
from unimq.idempotency import IdempotencyStore, MemoryIdempotencyStore
from unimq.retry import RetryPolicy, fixed
from unimq.testing.idempotency import IdempotencyStoreCases

from .servers import PostgresServer, RedisServer

# -- the conformance cases, once per store --------------------------------------------------


class TestMemoryStore(IdempotencyStoreCases):
    @pytest.fixture
    def store(self) -> IdempotencyStore:
        return MemoryIdempotencyStore()


class TestRedisStore(IdempotencyStoreCases):
    @pytest_asyncio.fixture
    async def store(self, redis_server: RedisServer) -> AsyncIterator[IdempotencyStore]:
        async with RedisIdempotencyStore.from_url(redis_server.url) as store:
            yield store

    @pytest_asyncio.fixture
    async def second_store(self, redis_server: RedisServer) -> AsyncIterator[IdempotencyStore]:
        async with RedisIdempotencyStore.from_url(redis_server.url) as store:
            yield store


class TestPostgresStore(IdempotencyStoreCases):
    """Leases measured by the database server's clock (the default on PostgreSQL)."""

    @pytest_asyncio.fixture
    async def store(self, postgres_server: PostgresServer) -> AsyncIterator[IdempotencyStore]:
        async with SQLIdempotencyStore(postgres_server.async_url) as store:
            yield store

    @pytest_asyncio.fixture
    async def second_store(
        self, postgres_server: PostgresServer
    ) -> AsyncIterator[IdempotencyStore]:
        async with SQLIdempotencyStore(postgres_server.async_url) as store:
            yield store


class TestPostgresClientClockStore(IdempotencyStoreCases):
    """The portable path (each client's clock), as on databases other than PostgreSQL; with
    its own table, named by the URL."""

    @pytest_asyncio.fixture
    async def store(self, postgres_server: PostgresServer) -> AsyncIterator[IdempotencyStore]:
        url = f"{postgres_server.url}?table=unimq_idem_client_clock"
        async with SQLIdempotencyStore(url, clock="client") as store:
            yield store

    @pytest_asyncio.fixture
    async def second_store(
        self, postgres_server: PostgresServer
    ) -> AsyncIterator[IdempotencyStore]:
        url = f"{postgres_server.url}?table=unimq_idem_client_clock"
        async with SQLIdempotencyStore(url, clock="client") as store:
            yield store


def _ids() -> tuple[str, str]:
    run = uuid.uuid4().hex[:10]
    return f"g-{run}", f"m-{run}"


# -- Redis ----------------------------------------------------------------------------------


async def test_redis_url_options_set_ttl_and_prefix(redis_server: RedisServer) -> None:
    group, message_id = _ids()
    url = f"{redis_server.url}?ttl=120&prefix=test:idem:"
    async with RedisIdempotencyStore.from_url(url) as store:
        assert store.ttl == 120 and store.prefix == "test:idem:"
        assert await store.begin(group, message_id, 30) is True
        key = store.key(group, message_id)
        assert key == f"test:idem:{group}:{message_id}"
        raw = aioredis.Redis.from_url(redis_server.url)
        try:
            running = await raw.get(key)
            assert running is not None and running.startswith(b"run:")
            assert 0 < await raw.pttl(key) <= 30_000
            await store.complete(group, message_id)
            assert await raw.get(key) == b"done"
            assert 110_000 < await raw.pttl(key) <= 120_000
        finally:
            await raw.aclose()


async def test_redis_bad_ttl_is_a_configuration_error_without_the_password(
    redis_server: RedisServer,
) -> None:
    with pytest.raises(ConfigurationError) as info:
        RedisIdempotencyStore.from_url(f"{redis_server.url}?ttl=soon")
    assert "ttl" in str(info.value)
    assert redis_server.password not in str(info.value)


async def test_redis_password_never_in_repr_or_errors(redis_server: RedisServer) -> None:
    async with RedisIdempotencyStore.from_url(redis_server.url) as store:
        assert redis_server.password not in repr(store)
        assert "***" in repr(store) and str(redis_server.port) in repr(store)
    wrong = "wr0ng-passw0rd"
    async with RedisIdempotencyStore.from_url(
        f"redis://:{wrong}@127.0.0.1:{redis_server.port}/0"
    ) as store:
        assert wrong not in repr(store)
        with pytest.raises(Exception) as info:
            await store.begin(*_ids(), 5)
        assert wrong not in str(info.value) and wrong not in repr(info.value)


async def test_broker_builds_the_redis_store_from_its_url(redis_server: RedisServer) -> None:
    group, message_id = _ids()
    port_url = f"redis://:{redis_server.password}@127.0.0.1:{redis_server.port}/0"
    broker = Broker(f"memory://{group}", idempotency_store=port_url)
    store = broker.idempotency_store
    assert isinstance(store, RedisIdempotencyStore)
    assert redis_server.password not in repr(store) and redis_server.password not in repr(broker)
    seen: list[str] = []

    @broker.subscriber("orders", group=group, idempotent=True)
    async def handle(message: Message) -> None:
        seen.append(message.id)

    try:
        async with broker:
            for _ in range(3):
                await broker.publish("orders", b"x", message_id=message_id)
            await broker.drain(10)
            await asyncio.sleep(0.2)
            await broker.drain(10)
        assert seen == [message_id]
        # The mark is in Redis, where another process (another store) sees it.
        async with RedisIdempotencyStore.from_url(redis_server.url) as other:
            assert await other.begin(group, message_id, 5) is False
    finally:
        await store.close()


async def test_redis_crash_between_side_effect_and_mark_runs_it_again(
    redis_server: RedisServer,
) -> None:
    """The documented at-least-once window: a consumer that dies after its side effect but
    before ``complete`` leaves only its lease; once that expires, the message runs again."""
    group, message_id = _ids()
    side_effects: list[str] = []
    async with (
        RedisIdempotencyStore.from_url(redis_server.url) as crashed,
        RedisIdempotencyStore.from_url(redis_server.url) as survivor,
    ):
        assert await crashed.begin(group, message_id, 0.3) is True
        side_effects.append("charge card")  # ... and the process dies before complete()
        assert await survivor.begin(group, message_id, 30) is True  # after the lease
        side_effects.append("charge card")
        await survivor.complete(group, message_id)
    assert side_effects == ["charge card", "charge card"]


# -- PostgreSQL -----------------------------------------------------------------------------

orders = Table(
    "unimq_test_orders",
    MetaData(),
    Column("order_id", String(64), primary_key=True),
    Column("message_id", String(64), nullable=False),
)


@pytest.fixture
def sync_engine(postgres_server: PostgresServer) -> Iterator[Engine]:
    engine = create_engine(postgres_server.url)
    orders.create(engine, checkfirst=True)
    yield engine
    engine.dispose()


@pytest_asyncio.fixture
async def engine(
    postgres_server: PostgresServer, sync_engine: Engine
) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(postgres_server.async_url)
    yield engine
    await engine.dispose()


@pytest_asyncio.fixture
async def sql_store(engine: AsyncEngine) -> AsyncIterator[SQLIdempotencyStore]:
    store = SQLIdempotencyStore(engine)
    await store.create_table()
    yield store
    await store.close()  # leaves the caller's engine alone


def _orders_for(sync_engine: Engine, message_id: str) -> int:
    with sync_engine.connect() as conn:
        count = conn.execute(
            select(func.count()).select_from(orders).where(orders.c.message_id == message_id)
        ).scalar_one()
    return int(count)


def _state(sync_engine: Engine, group: str, message_id: str) -> str | None:
    t = idempotency_table
    with sync_engine.connect() as conn:
        state = conn.execute(
            select(t.c.state).where(t.c.group_name == group, t.c.message_id == message_id)
        ).scalar_one_or_none()
    return state


async def test_sql_business_write_and_mark_commit_together(
    engine: AsyncEngine, sql_store: SQLIdempotencyStore, sync_engine: Engine
) -> None:
    group, message_id = _ids()
    sessions = async_sessionmaker(engine)
    assert await sql_store.begin(group, message_id, 30) is True
    async with sessions.begin() as session:
        await session.execute(insert(orders).values(order_id=message_id, message_id=message_id))
        await amark_handled(session, group, message_id)
        # Not committed yet: another connection still sees the lease, not the mark.
        assert _state(sync_engine, group, message_id) == "running"
    assert _state(sync_engine, group, message_id) == "done"
    assert _orders_for(sync_engine, message_id) == 1
    await sql_store.complete(group, message_id)  # the pipeline's own mark: a no-op now
    assert _state(sync_engine, group, message_id) == "done"
    async with SQLIdempotencyStore(engine) as other:
        assert await other.begin(group, message_id, 30) is False


async def test_sql_rollback_leaves_neither_write_nor_mark(
    engine: AsyncEngine, sql_store: SQLIdempotencyStore, sync_engine: Engine
) -> None:
    group, message_id = _ids()
    sessions = async_sessionmaker(engine)
    assert await sql_store.begin(group, message_id, 30) is True
    with pytest.raises(RuntimeError, match="payment declined"):
        async with sessions.begin() as session:
            await session.execute(insert(orders).values(order_id=message_id, message_id=message_id))
            await amark_handled(session, group, message_id)
            raise RuntimeError("payment declined")
    assert _orders_for(sync_engine, message_id) == 0
    assert _state(sync_engine, group, message_id) == "running"  # only our lease
    await sql_store.release(group, message_id)  # what the pipeline does on failure
    assert _state(sync_engine, group, message_id) is None
    async with SQLIdempotencyStore(engine) as other:
        assert await other.begin(group, message_id, 30) is True
        await other.release(group, message_id)


async def test_sql_crash_after_commit_redelivery_is_skipped(
    engine: AsyncEngine, sql_store: SQLIdempotencyStore, sync_engine: Engine
) -> None:
    """A consumer that dies after its transaction committed, before the ack and complete():
    the redelivered copy finds the mark, even before the dead consumer's lease ends."""
    group, message_id = _ids()
    sessions = async_sessionmaker(engine)
    assert await sql_store.begin(group, message_id, 300) is True
    async with sessions.begin() as session:
        await session.execute(insert(orders).values(order_id=message_id, message_id=message_id))
        await amark_handled(session, group, message_id)
    # ... the process dies here: no complete(), no release(), no ack.
    async with SQLIdempotencyStore(engine) as restarted:
        assert await asyncio.wait_for(restarted.begin(group, message_id, 30), 5) is False
    assert _orders_for(sync_engine, message_id) == 1


async def test_sql_two_runs_racing_commit_the_effect_once(
    engine: AsyncEngine, sql_store: SQLIdempotencyStore, sync_engine: Engine
) -> None:
    """Two runs of one message at once (the first's lease expired while it was still
    running): the second transaction to mark gets AlreadyHandledError and rolls back."""
    group, message_id = _ids()
    sessions = async_sessionmaker(engine)
    assert await sql_store.begin(group, message_id, 0.2) is True
    await asyncio.sleep(0.4)
    async with SQLIdempotencyStore(engine) as other:
        assert await other.begin(group, message_id, 30) is True  # took the lease over
    first_marked = asyncio.Event()
    first_may_commit = asyncio.Event()

    async def first_run() -> None:
        async with sessions.begin() as session:
            await session.execute(
                insert(orders).values(order_id="a-" + message_id, message_id=message_id)
            )
            await amark_handled(session, group, message_id)
            first_marked.set()
            await first_may_commit.wait()

    async def second_run() -> None:
        await first_marked.wait()
        async with sessions.begin() as session:
            await session.execute(
                insert(orders).values(order_id="b-" + message_id, message_id=message_id)
            )
            await amark_handled(session, group, message_id)  # blocks on the first's row lock

    first = asyncio.create_task(first_run())
    second = asyncio.create_task(second_run())
    await first_marked.wait()
    await asyncio.sleep(0.3)
    assert not second.done()
    first_may_commit.set()
    await asyncio.wait_for(first, 10)
    with pytest.raises(AlreadyHandledError) as info:
        await asyncio.wait_for(second, 10)
    assert info.value.message_id == message_id
    assert _orders_for(sync_engine, message_id) == 1
    assert _state(sync_engine, group, message_id) == "done"


async def test_sql_mark_without_a_lease_then_duplicate_mark_is_refused(
    engine: AsyncEngine, sql_store: SQLIdempotencyStore, sync_engine: Engine
) -> None:
    group, message_id = _ids()
    async with engine.begin() as conn:  # an AsyncConnection works as well as a session
        await amark_handled(conn, group, message_id)
    assert _state(sync_engine, group, message_id) == "done"
    with pytest.raises(AlreadyHandledError):
        async with engine.begin() as conn:
            await amark_handled(conn, group, message_id)
    assert await sql_store.begin(group, message_id, 30) is False


def test_sql_sync_mark_with_session_and_connection(
    postgres_server: PostgresServer, sync_engine: Engine
) -> None:
    """Sync handlers (run in unimq's thread pool) use mark_handled with a Session or a
    Connection of a sync engine on the same database."""
    group, message_id = _ids()
    with Session(sync_engine) as session, session.begin():
        session.execute(insert(orders).values(order_id=message_id, message_id=message_id))
        mark_handled(session, group, message_id)
    assert _state(sync_engine, group, message_id) == "done"
    with pytest.raises(AlreadyHandledError), sync_engine.begin() as conn:
        conn.execute(insert(orders).values(order_id="x-" + message_id, message_id=message_id))
        mark_handled(conn, group, message_id)
    assert _orders_for(sync_engine, message_id) == 1

    other_id = message_id + "-2"
    with pytest.raises(RuntimeError), sync_engine.begin() as conn:
        mark_handled(conn, group, other_id)
        raise RuntimeError("rolled back")
    assert _state(sync_engine, group, other_id) is None


async def test_sql_handler_marks_in_its_transaction_through_a_broker(
    postgres_server: PostgresServer, sync_engine: Engine
) -> None:
    """End to end, the docstring's pattern: the handler commits the order and the mark, then
    the process 'crashes' before the ack (simulated by raising after the commit). The
    redelivered copy is acked without running; a later duplicate too."""
    group, message_id = _ids()
    engine = create_async_engine(postgres_server.async_url)
    store = SQLIdempotencyStore(engine)
    sessions = async_sessionmaker(engine)
    broker = Broker(f"memory://{group}", idempotency_store=store)
    runs: list[int] = []

    @broker.subscriber(
        "orders",
        group=group,
        idempotent=True,
        retry=RetryPolicy(max_attempts=5, backoff=fixed(0.05)),
    )
    async def place(message: Message) -> None:
        runs.append(message.attempt)
        async with sessions.begin() as session:
            await session.execute(insert(orders).values(order_id=message.id, message_id=message.id))
            await store.amark_handled(session, message.group, message.id)
        if message.attempt == 1:
            raise RuntimeError("crashed after the commit, before the ack")

    try:
        async with broker:
            await broker.publish("orders", b"x", message_id=message_id)
            for _ in range(100):
                await broker.drain(10)
                await asyncio.sleep(0.05)
                if _state(sync_engine, group, message_id) == "done" and len(runs) >= 1:
                    break
            await asyncio.sleep(0.3)  # the retry (attempt 2) arrives and is skipped
            await broker.drain(10)
            await broker.publish("orders", b"x", message_id=message_id)  # a duplicate
            await broker.drain(10)
            await asyncio.sleep(0.2)
        assert runs == [1]
        assert _orders_for(sync_engine, message_id) == 1
        assert _state(sync_engine, group, message_id) == "done"
    finally:
        await engine.dispose()


async def test_broker_builds_the_sql_store_from_its_url(
    postgres_server: PostgresServer, sync_engine: Engine
) -> None:
    group, message_id = _ids()
    broker = Broker(f"memory://{group}", idempotency_store=postgres_server.url)
    store = broker.idempotency_store
    assert isinstance(store, SQLIdempotencyStore)
    assert store.engine.url.drivername == "postgresql+psycopg"
    assert postgres_server.password not in repr(store)
    seen: list[str] = []

    @broker.subscriber("orders", group=group, idempotent=True)
    async def handle(message: Message) -> None:
        seen.append(message.id)

    try:
        async with broker:
            for _ in range(3):
                await broker.publish("orders", b"x", message_id=message_id)
            await broker.drain(10)
            await asyncio.sleep(0.2)
            await broker.drain(10)
        assert seen == [message_id]
        assert _state(sync_engine, group, message_id) == "done"
    finally:
        await store.close()


async def test_sql_password_never_in_repr_or_errors(postgres_server: PostgresServer) -> None:
    wrong = "wr0ng-pg-passw0rd"
    url = f"postgresql+psycopg://unimq:{wrong}@127.0.0.1:{postgres_server.port}/unimq_test"
    async with SQLIdempotencyStore(url) as store:
        assert wrong not in repr(store)
        with pytest.raises(Exception) as info:
            await store.begin(*_ids(), 5)
        assert wrong not in str(info.value) and wrong not in repr(info.value)


async def test_sql_tables_are_created_once_even_concurrently(
    postgres_server: PostgresServer,
) -> None:
    name = f"unimq_idem_{uuid.uuid4().hex[:8]}"
    url = f"{postgres_server.async_url}?table={name}"
    stores = [SQLIdempotencyStore(url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(s.begin("g", f"m{i}", 30) for i, s in enumerate(stores)))
        assert results == [True] * 4
        assert all(s.table.name == name for s in stores)
    finally:
        for s in stores:
            await s.close()


async def test_sql_purge_forgets_old_marks(postgres_server: PostgresServer) -> None:
    url = f"{postgres_server.async_url}?table=unimq_idem_purge"
    group, message_id = _ids()
    async with SQLIdempotencyStore(url) as store:
        assert await store.begin(group, message_id, 30) is True
        await store.complete(group, message_id)
        assert await store.purge(older_than=3600) == 0
        await asyncio.sleep(0.05)
        assert await store.purge(older_than=0) >= 1
        assert await store.begin(group, message_id, 30) is True  # forgotten: runs again
        await store.release(group, message_id)


def test_unknown_store_scheme_names_the_installed_ones() -> None:
    with pytest.raises(ConfigurationError) as info:
        Broker("memory://", idempotency_store="mongodb://somewhere")
    for scheme in ("redis", "rediss", "postgresql", "postgresql+psycopg"):
        assert scheme in str(info.value)
