"""A producer that dies inside its transactions, for the RocketMQ check-back test.

Usage: python rocketmq_tx_child.py URL NAMESRV TOPIC SQLITE_PATH

Opens two transactions at once: ``order-commit`` stages its half message and commits its
order row to SQLite; ``order-rollback`` stages its half message and rolls its row back. Then
it prints "staged" and waits inside both ``async with broker.transaction()`` blocks, so
neither half message is ever committed or rolled back by this process: the test SIGKILLs it,
and the broker's check-back must settle both by the database's state.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys

from unimq import Broker


async def order(
    broker: Broker, topic: str, path: str, order_id: str, staged: asyncio.Event, commit_row: bool
) -> None:
    async with broker.transaction() as tx:
        await tx.publish(topic, {"order": order_id}, message_id=order_id)
        db = sqlite3.connect(path)
        db.execute("INSERT INTO orders (id) VALUES (?)", (order_id,))
        if commit_row:
            db.commit()
        else:
            db.rollback()
        db.close()
        staged.set()
        await asyncio.Event().wait()  # killed here, between the half message and the commit


async def main(url: str, namesrv: str, topic: str, path: str) -> None:
    broker = Broker(url, auto_provision=True, namesrv=namesrv, transaction_topics=topic)
    async with broker:
        committed, rolled_back = asyncio.Event(), asyncio.Event()
        tasks = [
            asyncio.create_task(order(broker, topic, path, "order-commit", committed, True)),
            asyncio.create_task(order(broker, topic, path, "order-rollback", rolled_back, False)),
        ]
        await committed.wait()
        await rolled_back.wait()
        print("staged", flush=True)
        await asyncio.gather(*tasks)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
