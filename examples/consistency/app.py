"""Consistency with the database: an order service and an inventory service that never lose
or double an event, even when the relay crashes.

- The **order service** writes the order row and its ``OrderCreated`` event in ONE database
  transaction (``SQLOutbox.publish``). Some orders fail validation after the event was
  written: their transaction rolls back, and the event with it.
- The **relay** (inside ``Broker(url, outbox=outbox)``) publishes committed events.
- The **inventory service** takes the stock and writes its idempotency mark in ONE
  transaction of its own (``amark_handled``): a copy of an event it already handled changes
  nothing.

At the end the demo checks that the stock moved exactly once for every committed order and
never for a rolled-back one.

Run it (SQLite in a temporary directory, the ``memory://`` broker)::

    python -m examples.consistency              # 200 orders
    python -m examples.consistency --crash      # the relay is killed at random points
    python -m examples.consistency --db postgresql://user:password@127.0.0.1/shop

It runs unchanged on a real broker: ``UNIMQ_URL=amqp://guest:guest@127.0.0.1:5672/ python -m
examples.consistency --crash``. With a real broker, ``--crash`` runs the relay as its own
process (``unimq outbox relay``) and SIGKILLs it; on ``memory://`` the broker lives in this
process, so the relay is aborted in-process instead, mid-batch, exactly where a kill would
stop it (its database transaction rolls back; what it had published is published again).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import ForeignKey, String, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from unimq_sql import SQLIdempotencyStore, SQLOutbox, amark_handled, sqlite_engine

from unimq import Broker, Message
from unimq.instrumentation import Publish, PublishNext

SKUS = ("apple", "pear", "plum")
INITIAL_STOCK = 1_000_000


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "demo_orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer: Mapped[str] = mapped_column(String(32))
    sku: Mapped[str] = mapped_column(String(32))
    quantity: Mapped[int]


class Stock(Base):
    __tablename__ = "demo_stock"
    sku: Mapped[str] = mapped_column(String(32), primary_key=True)
    quantity: Mapped[int]


class StockMove(Base):
    """One row per stock change: a second move for one order would be a double effect."""

    __tablename__ = "demo_stock_moves"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("demo_orders.id"))
    quantity: Mapped[int]


class OrderCreated(BaseModel):
    order_id: int
    sku: str
    quantity: int


class InvalidOrder(Exception):
    """Raised after the event was written: the whole transaction rolls back."""


# -- the services -------------------------------------------------------------------------


def build(engine: AsyncEngine, url: str, *, relay_here: bool) -> tuple[Broker, SQLOutbox]:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    outbox = SQLOutbox(engine, poll_interval=0.05)
    store = SQLIdempotencyStore(engine)
    broker = Broker(url, outbox=outbox if relay_here else None, idempotency_store=store)

    @broker.subscriber("orders.created", group="inventory", idempotent=True, concurrency=4)
    async def take_stock(event: OrderCreated, message: Message) -> None:
        async with sessions.begin() as session:  # the stock and the mark commit together
            await session.execute(
                update(Stock)
                .where(Stock.sku == event.sku)
                .values(quantity=Stock.quantity - event.quantity)
            )
            session.add(StockMove(order_id=event.order_id, quantity=event.quantity))
            await amark_handled(session, message.group, message.id)

    return broker, outbox


async def place_order(
    engine: AsyncEngine, outbox: SQLOutbox, order_id: int, rng: random.Random
) -> bool:
    """The order service: the order row and its event in one transaction. True if committed."""
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    order = Order(
        id=order_id,
        customer=f"customer-{rng.randrange(20)}",
        sku=rng.choice(SKUS),
        quantity=rng.randint(1, 5),
    )
    try:
        async with sessions.begin() as session:
            session.add(order)
            await outbox.publish(
                session,
                "orders.created",
                OrderCreated(order_id=order.id, sku=order.sku, quantity=order.quantity),
                key=order.customer,  # one customer's orders stay in order
            )
            if rng.random() < 0.15:
                raise InvalidOrder(order_id)  # e.g. the card was declined
    except InvalidOrder:
        return False
    return True


# -- crashing the relay -------------------------------------------------------------------


class Crasher:
    """Kills the relay at random points and starts it again."""

    def __init__(self, broker: Broker, outbox: SQLOutbox, db_url: str, broker_url: str) -> None:
        self.broker = broker
        self.outbox = outbox
        self.db_url = db_url
        self.broker_url = broker_url
        self.in_process = broker_url.startswith("memory:")
        self.kills = 0
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        if self.in_process:
            await self.outbox.start_relay(self.broker)
            return
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "unimq.cli",
            "--log-level",
            "warning",
            "outbox",
            "relay",
            "--url",
            self.broker_url,
            env={**os.environ, "UNIMQ_OUTBOX_URL": self.db_url},
        )

    async def kill(self) -> None:
        if self.in_process:
            await self.outbox.stop_relay(abort=True)
        elif self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGKILL)
            await self.process.wait()
        self.kills += 1

    async def stop(self) -> None:
        if self.in_process:
            await self.outbox.stop_relay()
        elif self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            await self.process.wait()

    async def run(self, until: asyncio.Future[object], rng: random.Random) -> None:
        while not until.done():
            await self.start()
            await asyncio.sleep(rng.uniform(0.05, 0.5 if self.in_process else 2.0))
            await self.kill()


# -- the demo -------------------------------------------------------------------------------


async def demo(db_url: str, broker_url: str, orders: int, crash: bool, seed: int) -> int:
    engine = (
        sqlite_engine(db_url)  # BEGIN IMMEDIATE: SQLite writers wait their turn
        if db_url.startswith("sqlite")
        else create_async_engine(db_url)
    )
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
        await conn.execute(Stock.__table__.delete())
        await conn.execute(
            Stock.__table__.insert(), [{"sku": s, "quantity": INITIAL_STOCK} for s in SKUS]
        )
    in_process_crash = crash and broker_url.startswith("memory:")
    broker, outbox = build(engine, broker_url, relay_here=not crash)
    await outbox.create_table()
    relayed: Counter[str] = Counter()

    async def count(publish: Publish, call_next: PublishNext) -> None:
        await call_next()
        if publish.message.topic == "orders.created" and publish.message.message_id:
            relayed[publish.message.message_id] += 1

    broker.add_publish_middleware(count)
    rng = random.Random(seed)
    committed: list[int] = []
    first_id = int(time.time() * 1000) % 1_000_000_000 * 1000  # fresh ids on a reused database
    async with broker:
        crasher = Crasher(broker, outbox, db_url, broker_url) if crash else None

        async def write_orders() -> None:
            for n in range(orders):
                if await place_order(engine, outbox, first_id + n, rng):
                    committed.append(first_id + n)
                await asyncio.sleep(rng.uniform(0, 0.01))

        writing = asyncio.ensure_future(write_orders())
        if crasher is not None:
            await crasher.run(writing, rng)
            await crasher.start()  # a last relay that lives to the end
        await writing
        print(
            f"{orders} orders placed: {len(committed)} committed, "
            f"{orders - len(committed)} rolled back"
        )
        deadline = time.monotonic() + 120
        while await _moves(engine, first_id) < len(committed) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # any late duplicate arrives meanwhile
        if crasher is not None:
            await crasher.stop()
            print(f"relay killed {crasher.kills} times")
    ok = await report(engine, first_id, committed, relayed, in_process_crash or not crash)
    await engine.dispose()
    return 0 if ok else 1


async def report(
    engine: AsyncEngine,
    first_id: int,
    committed: list[int],
    relayed: Counter[str],
    counted: bool,
) -> bool:
    async with engine.connect() as conn:
        moves = (
            await conn.execute(
                select(StockMove.order_id, func.count())
                .where(StockMove.order_id >= first_id)
                .group_by(StockMove.order_id)
            )
        ).all()
        left = (await conn.execute(select(func.sum(Stock.quantity)))).scalar_one()
        taken = INITIAL_STOCK * len(SKUS) - left
        ordered = (
            await conn.execute(
                select(func.coalesce(func.sum(Order.quantity), 0)).where(Order.id.in_(committed))
            )
        ).scalar_one()
    moved = {order_id: n for order_id, n in moves}
    twice = [order_id for order_id, n in moved.items() if n > 1]
    missing = sorted(set(committed) - set(moved))
    phantom = sorted(set(moved) - set(committed))
    if counted:
        copies = sum(relayed.values()) - len(relayed)
        print(
            f"events published {sum(relayed.values())} times for {len(relayed)} orders: "
            f"{copies} republished copies, dropped by the idempotent inventory service"
        )
    print(f"stock moves: {len(moved)} orders, {taken} items taken, {ordered} items ordered")
    ok = not twice and not missing and not phantom and taken == ordered
    if ok:
        print(
            "OK: the stock moved exactly once for every committed order, never for a "
            "rolled-back one"
        )
    else:
        print(
            f"FAILED: moved twice {twice[:10]}, missing {missing[:10]}, "
            f"rolled back but moved {phantom[:10]}"
        )
    return ok


async def _moves(engine: AsyncEngine, first_id: int) -> int:
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    select(func.count(func.distinct(StockMove.order_id))).where(
                        StockMove.order_id >= first_id
                    )
                )
            ).scalar_one()
        )


def _database_url(given: str | None) -> str:
    if given:
        if given.startswith(("postgresql://", "postgres://")):
            return "postgresql+psycopg://" + given.split("://", 1)[1]
        if given.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + given[len("sqlite:///") :]
        return given
    path = Path(tempfile.mkdtemp(prefix="unimq-consistency-")) / "shop.db"
    return f"sqlite+aiosqlite:///{path}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="database URL (default: SQLite in a temporary directory)")
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--crash", action="store_true", help="kill the relay at random points")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("-v", "--verbose", action="store_true", help="show unimq's logs")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    broker_url = os.environ.get("UNIMQ_URL", "memory://consistency")
    db_url = _database_url(args.db)
    print(f"database {db_url.split('@')[-1]}, broker {broker_url.split('@')[-1]}")
    return asyncio.run(demo(db_url, broker_url, args.orders, args.crash, args.seed))


if __name__ == "__main__":
    raise SystemExit(main())
