"""The transactional outbox (unimq_sql.SQLOutbox) on SQLite and on a real PostgreSQL server.

Each test uses its own table, so the tests share one PostgreSQL server without interfering.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

pytest.importorskip("sqlalchemy")
pytest.importorskip("aiosqlite")

from sqlalchemy import create_engine, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from unimq_sql import OutboxUsageError, SQLOutbox

from unimq import Broker, Message
from unimq import headers as h
from unimq.errors import ConfigurationError, MessageTooLargeError, PublishError, UnimqError
from unimq.instrumentation import Publish, PublishNext
from unimq.transport import OutgoingMessage

from .servers import PostgresServer

pytestmark = pytest.mark.timeout(60)


class DB:
    def __init__(self, kind: str, async_url: str, sync_url: str) -> None:
        self.kind = kind
        self.async_url = async_url
        self.sync_url = sync_url
        self.table = f"outbox_{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> DB:
    if request.param == "sqlite":
        path = tmp_path / "outbox.db"
        return DB("sqlite", f"sqlite+aiosqlite:///{path}", f"sqlite:///{path}")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return DB("postgresql", server.async_url, server.url)


@pytest_asyncio.fixture
async def engine(db: DB) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(db.async_url)
    yield engine
    await engine.dispose()


def make_outbox(engine: AsyncEngine, db: DB, **options: Any) -> SQLOutbox:
    options.setdefault("poll_interval", 0.05)
    return SQLOutbox(engine, table=db.table, **options)


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def capture(broker: Broker) -> list[OutgoingMessage]:
    sent: list[OutgoingMessage] = []

    async def record(publish: Publish, call_next: PublishNext) -> None:
        await call_next()
        sent.append(publish.message)

    broker.add_publish_middleware(record)
    return sent


async def test_relayed_message_is_byte_identical_to_a_direct_publish(
    engine: AsyncEngine, db: DB
) -> None:
    outbox = make_outbox(engine, db)
    await outbox.create_table()
    broker = Broker(f"memory://outbox-identical-{db.table}", outbox=outbox)
    sent = capture(broker)
    async with broker:
        await broker.publish(
            "orders", {"n": 1}, key="c-7", headers={"tenant": "t1"}, message_id="m-1"
        )
        async with AsyncSession(engine) as session, session.begin():
            receipt = await outbox.publish(
                session, "orders", {"n": 1}, key="c-7", headers={"tenant": "t1"}, message_id="m-1"
            )
        assert receipt.message_id == "m-1" and receipt.topic == "orders"
        await eventually(lambda: len(sent) == 2)
    direct, relayed = sent
    # The publish time (unimq-published-at) is each publish's own moment: the rest is identical.
    direct_time = int(direct.headers.pop(h.PUBLISHED_AT))
    relayed_time = int(relayed.headers.pop(h.PUBLISHED_AT))
    assert 0 <= relayed_time - direct_time < 10_000
    assert relayed == direct


async def test_rollback_leaves_nothing_and_commit_delivers_with_the_receipt_id(
    engine: AsyncEngine, db: DB
) -> None:
    outbox = make_outbox(engine, db)
    await outbox.create_table()
    broker = Broker(f"memory://outbox-rollback-{db.table}", outbox=outbox)
    got: list[tuple[Any, str]] = []

    @broker.subscriber("orders", group="g")
    async def handle(body: dict[str, int], message: Message) -> None:
        got.append((body, message.id))

    async with broker:
        with pytest.raises(RuntimeError):
            async with AsyncSession(engine) as session, session.begin():
                await outbox.publish(session, "orders", {"n": 0})
                raise RuntimeError("the business write failed")
        async with engine.begin() as conn:  # AsyncConnection works as well
            receipt = await outbox.publish(conn, "orders", {"n": 1})
        await eventually(lambda: len(got) == 1)
        await asyncio.sleep(0.3)
    assert got == [({"n": 1}, receipt.message_id)]
    status = await outbox.status()
    assert (status.pending, status.sent, status.failed) == (0, 1, 0)


async def test_sync_session_variant(engine: AsyncEngine, db: DB) -> None:
    outbox = make_outbox(engine, db)
    await outbox.create_table()
    sync_engine = create_engine(db.sync_url)
    try:
        with Session(sync_engine) as session, session.begin():
            receipt = outbox.publish_sync(session, "orders", "hello", key="k")
        with pytest.raises(ZeroDivisionError), Session(sync_engine) as session, session.begin():
            outbox.publish_sync(session, "orders", "rolled back")
            raise ZeroDivisionError
    finally:
        sync_engine.dispose()
    broker = Broker(f"memory://outbox-sync-{db.table}", outbox=outbox)
    got: list[str] = []

    @broker.subscriber("orders", group="g")
    async def handle(body: str, message: Message) -> None:
        got.append(message.id)

    async with broker:
        await eventually(lambda: len(got) == 1)
        await asyncio.sleep(0.2)
    assert got == [receipt.message_id]


async def test_misuse_raises_typed_errors(engine: AsyncEngine, db: DB) -> None:
    outbox = make_outbox(engine, db)
    await outbox.create_table()
    async with AsyncSession(engine) as session:
        with pytest.raises(OutboxUsageError, match="inside the transaction"):
            await outbox.publish(session, "orders", "x")  # no transaction begun
    sync_engine = create_engine(db.sync_url)
    try:
        with (
            Session(sync_engine) as sync_session,
            sync_session.begin(),
            pytest.raises(OutboxUsageError, match="publish_sync"),
        ):
            await outbox.publish(sync_session, "orders", "x")  # type: ignore[arg-type]
    finally:
        sync_engine.dispose()
    async with AsyncSession(engine) as session, session.begin():
        with pytest.raises(OutboxUsageError, match=r"await outbox\.publish"):
            outbox.publish_sync(session, "orders", "x")  # type: ignore[arg-type]
        with pytest.raises(OutboxUsageError):
            await outbox.publish("not a session", "orders", "x")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Broker("memory://outbox-bad", outbox=object())
    with pytest.raises(ConfigurationError):
        SQLOutbox(engine, batch_size=0)


BAD_ARGUMENTS: list[dict[str, Any]] = [
    {"topic": ""},
    {"topic": "t" * 300},
    {"key": 5},
    {"headers": {"h": object()}},
    {"headers": {"unimq-id": "forged"}},
    {"headers": ["not", "a", "mapping"]},
    {"delay": -1},
    {"delay": float("nan")},
    {"delay": 1, "deliver_at": datetime.now(timezone.utc)},
    {"deliver_at": datetime(2030, 1, 1)},  # naive
    {"message_id": ""},
    {"body": object()},
]


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)  # the checks do not use the database
@pytest.mark.parametrize("bad", BAD_ARGUMENTS, ids=lambda bad: ",".join(bad))
async def test_arguments_are_checked_exactly_as_broker_publish_checks_them(
    engine: AsyncEngine, db: DB, bad: dict[str, Any]
) -> None:
    outbox = make_outbox(engine, db)
    await outbox.create_table()
    arguments: dict[str, Any] = {"topic": "orders", "body": "x", **bad}
    topic, body = arguments.pop("topic"), arguments.pop("body")
    async with Broker("memory://outbox-parity") as broker:
        with pytest.raises(UnimqError) as direct:
            await broker.publish(topic, body, **arguments)
    async with AsyncSession(engine) as session, session.begin():
        with pytest.raises(UnimqError) as via_outbox:
            await outbox.publish(session, topic, body, **arguments)
    assert type(via_outbox.value) is type(direct.value)
    assert str(via_outbox.value) == str(direct.value)


async def test_missing_table_is_a_typed_error(engine: AsyncEngine, db: DB) -> None:
    outbox = make_outbox(engine, db)  # no create_table
    with pytest.raises(OutboxUsageError, match="create_table"):
        async with AsyncSession(engine) as session, session.begin():
            await outbox.publish(session, "orders", "x")


async def test_rows_of_one_key_arrive_in_commit_order_and_keys_interleave(
    engine: AsyncEngine, db: DB
) -> None:
    outbox = make_outbox(engine, db, batch_size=37)
    await outbox.create_table()
    for start in range(0, 300, 30):
        async with AsyncSession(engine) as session, session.begin():
            for n in range(start, start + 30):
                await outbox.publish(session, "seq", {"key": f"k{n % 4}", "n": n}, key=f"k{n % 4}")
    broker = Broker(f"memory://outbox-order-{db.table}", outbox=outbox)
    seen: dict[str, list[int]] = {}

    @broker.subscriber("seq", group="g", ordered=True)
    async def handle(body: dict[str, Any]) -> None:
        seen.setdefault(body["key"], []).append(body["n"])

    async with broker:
        await eventually(lambda: sum(map(len, seen.values())) == 300)
    for key, numbers in seen.items():
        assert numbers == sorted(numbers), key
        assert len(numbers) == 75


async def test_a_row_the_broker_refuses_for_good_is_marked_failed_and_the_rest_flow(
    engine: AsyncEngine, db: DB
) -> None:
    outbox = make_outbox(engine, db)
    await outbox.create_table()
    broker = Broker(f"memory://outbox-failed-{db.table}", outbox=outbox)

    async def refuse_big(publish: Publish, call_next: PublishNext) -> None:
        if len(publish.message.body) > 100:
            raise MessageTooLargeError("too large for this backend")
        await call_next()

    broker.add_publish_middleware(refuse_big)
    got: list[str] = []

    @broker.subscriber("orders", group="g")
    async def handle(body: str) -> None:
        got.append(body)

    async with AsyncSession(engine) as session, session.begin():
        await outbox.publish(session, "orders", "x" * 200, key="k")
        await outbox.publish(session, "orders", "small", key="k")
    async with broker:
        await eventually(lambda: got == ["small"])
        relay = outbox.relay
        assert relay is not None
        await eventually(lambda: relay.relayed == 1)  # the batch committed
        status = await outbox.status()
    assert (status.pending, status.failed, status.sent) == (0, 1, 1)
    assert relay.failed == 1


async def test_a_transient_publish_error_keeps_the_row_and_it_is_relayed_later(
    engine: AsyncEngine, db: DB, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = make_outbox(engine, db)
    await outbox.create_table()
    broker = Broker(f"memory://outbox-transient-{db.table}", outbox=outbox)
    failures = [PublishError("broker nacked")]

    async def flaky(publish: Publish, call_next: PublishNext) -> None:
        if failures:
            raise failures.pop()
        await call_next()

    broker.add_publish_middleware(flaky)
    got: list[str] = []

    @broker.subscriber("orders", group="g")
    async def handle(body: str) -> None:
        got.append(body)

    async with AsyncSession(engine) as session, session.begin():
        await outbox.publish(session, "orders", "once")
    with caplog.at_level(logging.WARNING, logger="unimq.outbox"):
        async with broker:
            await eventually(lambda: got == ["once"])
    assert "broker nacked" in caplog.text


async def test_retention_zero_deletes_sent_rows_and_purge_honours_retention(
    engine: AsyncEngine, db: DB
) -> None:
    outbox = make_outbox(engine, db, retention=0)
    await outbox.create_table()
    broker = Broker(f"memory://outbox-retention-{db.table}", outbox=outbox)
    async with broker:
        async with AsyncSession(engine) as session, session.begin():
            await outbox.publish(session, "orders", "gone")
        relay = outbox.relay
        assert relay is not None
        await eventually(lambda: relay.relayed == 1)
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(outbox.table))).scalar() == 0
    kept = make_outbox(engine, db, retention=3600)
    broker = Broker(f"memory://outbox-retention2-{db.table}", outbox=kept)
    async with broker:
        async with AsyncSession(engine) as session, session.begin():
            await kept.publish(session, "orders", "kept")
        relay = kept.relay
        assert relay is not None
        await eventually(lambda: relay.relayed == 1)
    assert await kept.purge() == 0  # younger than the retention
    assert await kept.purge(older_than=0) == 1


async def test_delay_is_kept(engine: AsyncEngine, db: DB) -> None:
    outbox = make_outbox(engine, db)
    await outbox.create_table()
    broker = Broker(f"memory://outbox-delay-{db.table}", outbox=outbox)
    got: list[float] = []

    @broker.subscriber("later", group="g")
    async def handle(body: str) -> None:
        got.append(time.monotonic())

    async with broker:
        start = time.monotonic()
        async with AsyncSession(engine) as session, session.begin():
            receipt = await outbox.publish(session, "later", "x", delay=0.5)
        assert receipt.deliver_at is not None
        await eventually(lambda: len(got) == 1)
    assert got[0] - start >= 0.45


async def test_no_password_in_repr_or_relay_logs(caplog: pytest.LogCaptureFixture) -> None:
    outbox = SQLOutbox(
        "postgresql://app:hunter2-s3cret@127.0.0.1:9/nodb", poll_interval=0.05, notify=False
    )
    assert "hunter2" not in repr(outbox)
    broker = Broker("memory://outbox-secret", outbox=outbox)
    with caplog.at_level(logging.DEBUG, logger="unimq"):
        async with broker:  # the relay retries in the background; the broker starts anyway
            await asyncio.sleep(0.3)
    await outbox.close()
    assert "outbox relay:" in caplog.text
    assert "hunter2" not in caplog.text


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)  # LISTEN/NOTIFY: PostgreSQL only
async def test_listen_notify_wakes_the_relay_without_polling(engine: AsyncEngine, db: DB) -> None:
    outbox = make_outbox(engine, db, poll_interval=30.0)
    await outbox.create_table()
    broker = Broker(f"memory://outbox-notify-{db.table}", outbox=outbox)
    got: list[float] = []

    @broker.subscriber("orders", group="g")
    async def handle(body: str) -> None:
        got.append(time.monotonic())

    async with broker:
        await asyncio.sleep(0.5)  # the relay has polled once and sleeps for 30 s
        committed = time.monotonic()
        async with AsyncSession(engine) as session, session.begin():
            await outbox.publish(session, "orders", "wake up")
        await eventually(lambda: len(got) == 1, timeout=5)
    assert got[0] - committed < 1.0


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)  # SKIP LOCKED: PostgreSQL only
async def test_several_relays_share_the_work_without_duplicates_or_reordering(
    engine: AsyncEngine, db: DB
) -> None:
    outboxes = [make_outbox(engine, db, batch_size=20) for _ in range(3)]
    await outboxes[0].create_table()
    name = f"memory://outbox-many-{db.table}"
    consumer = Broker(name)
    seen: dict[str, list[int]] = {}
    ids: list[str] = []

    @consumer.subscriber("seq", group="g", ordered=True)
    async def handle(body: dict[str, Any], message: Message) -> None:
        seen.setdefault(body["key"], []).append(body["n"])
        ids.append(message.id)

    relays = [Broker(name, outbox=outbox) for outbox in outboxes]
    jitter = random.Random(7)

    async def slow(publish: Publish, call_next: PublishNext) -> None:
        await asyncio.sleep(jitter.random() * 0.003)  # so that relays overlap
        await call_next()

    for relay_broker in relays:
        relay_broker.add_publish_middleware(slow)

    async def writer(w: int) -> None:
        for start in range(0, 200, 10):
            async with AsyncSession(engine) as session, session.begin():
                for n in range(start, start + 10):
                    key = f"k{n % 5}"
                    body = {"key": key, "n": w * 1000 + n}
                    await outboxes[0].publish(session, "seq", body, key=key)

    # A backlog first, so that the relays take overlapping batches of the same keys.
    await asyncio.gather(*(writer(w) for w in range(3)))
    async with consumer:
        for relay_broker in relays:
            await relay_broker.connect()
        await eventually(lambda: len(ids) == 600, timeout=30)
        await asyncio.sleep(0.3)
        counts = [outbox.relay.relayed for outbox in outboxes if outbox.relay is not None]
        for relay_broker in relays:
            await relay_broker.stop()
    assert len(set(ids)) == 600 == len(ids)
    assert sum(counts) == 600 and len(counts) == 3
    for key, numbers in seen.items():
        # per writer, numbers of one key increase: commit order per key
        for w in range(3):
            mine = [n for n in numbers if n // 1000 == w]
            assert mine == sorted(mine), key


async def test_prometheus_metrics_show_relayed_backlog_and_age(engine: AsyncEngine, db: DB) -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry
    from unimq_prometheus import OutboxMetrics

    outbox = make_outbox(engine, db)
    await outbox.create_table()
    registry = CollectorRegistry()
    OutboxMetrics(outbox).register(registry)
    labels = {"table": db.table}
    assert registry.get_sample_value("unimq_outbox_relayed_total", labels) is None  # no relay
    async with AsyncSession(engine) as session, session.begin():
        for n in range(4):
            await outbox.publish(session, "orders", n)
    await asyncio.sleep(0.2)
    async with Broker(f"memory://outbox-metrics-{db.table}", outbox=outbox):
        relay = outbox.relay
        assert relay is not None
        await eventually(lambda: relay.relayed == 4 and relay.last_status is not None)
        assert registry.get_sample_value("unimq_outbox_relayed_total", labels) == 4
        assert registry.get_sample_value("unimq_outbox_failed_total", labels) == 0
        assert registry.get_sample_value("unimq_outbox_backlog", labels) is not None
        assert registry.get_sample_value("unimq_outbox_oldest_age_seconds", labels) is not None


async def test_an_aborted_relay_leaves_what_it_published_pending_and_it_is_sent_again(
    engine: AsyncEngine, db: DB
) -> None:
    outbox = make_outbox(engine, db)
    await outbox.create_table()
    async with AsyncSession(engine) as session, session.begin():
        for n in range(5):
            await outbox.publish(session, "orders", n, key="k", message_id=f"m-{n}")
    broker = Broker(f"memory://outbox-abort-{db.table}")
    sent = capture(broker)
    aborted: list[bool] = []

    async def crash_after_first(publish: Publish, call_next: PublishNext) -> None:
        await call_next()
        if not aborted and outbox.relay is not None:  # "SIGKILL" after the first publish
            outbox.relay.abort()
            aborted.append(True)

    broker.add_publish_middleware(crash_after_first)
    async with broker:
        await outbox.start_relay(broker)
        await eventually(lambda: bool(aborted))
        await outbox.stop_relay(abort=True)
        assert (await outbox.status()).pending == 5  # nothing was marked
        assert [m.message_id for m in sent] == ["m-0"]
        await outbox.start_relay(broker)
        await eventually(lambda: len(sent) == 6)
        await outbox.stop_relay()
    assert [m.message_id for m in sent] == ["m-0", "m-0", "m-1", "m-2", "m-3", "m-4"]
    assert (await outbox.status()).sent == 5
