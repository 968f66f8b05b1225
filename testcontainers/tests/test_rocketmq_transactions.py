"""RocketMQ transactional (half) messages on the real broker (issue 13, acceptance line 3).

- a committed ``broker.transaction()`` delivers, a rolled-back one never does;
- the client's limits are refused with ``UnsupportedFeatureError`` before anything is staged;
- a producer SIGKILLed between the half message and the commit is resolved by the broker's
  check-back through ``Broker(transaction_checker=)``, following the database: the order whose
  row committed is delivered, the order whose row rolled back never is. The checker first
  fails once (an exception answers "unknown"), so the broker asking again is tested too.

The test image checks half messages back quickly (testcontainers/images/rocketmq/conf/
broker.conf: ``transactionTimeOut`` 3 s, ``transactionCheckInterval`` 2 s).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from unimq import Broker, Message, UnsupportedFeatureError

pytest.importorskip("rocketmq")

pytestmark = [pytest.mark.realbroker, pytest.mark.asyncio]

CHILD = Path(__file__).with_name("rocketmq_tx_child.py")


class Boom(Exception):
    pass


async def _until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


def _broker(rocketmq_broker: Any, topic: str, **options: Any) -> Broker:
    return Broker(
        rocketmq_broker.url,
        auto_provision=True,
        namesrv=rocketmq_broker.namesrv_address,
        transaction_topics=topic,
        **options,
    )


async def test_commit_delivers_and_rollback_never_does(
    rocketmq_broker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    tag = uuid.uuid4().hex[:8]
    topic, plain = f"tx.{tag}", f"plain.{tag}"
    broker = _broker(rocketmq_broker, topic)
    seen: list[str] = []

    @broker.subscriber(topic, group=f"tx-{tag}")
    async def handle(message: Message) -> None:
        seen.append(message.id)

    seen_plain: list[str] = []

    @broker.subscriber(plain, group=f"tx-{tag}")
    async def handle_plain(message: Message) -> None:
        seen_plain.append(message.id)

    async with broker:
        assert broker.capabilities.transactions
        assert broker.capabilities.max_transaction_messages == 1
        async with broker.transaction() as tx:
            await tx.publish(topic, {"n": 1}, message_id="committed-1")
        with pytest.raises(Boom):
            async with broker.transaction() as tx:
                await tx.publish(topic, {"n": 2}, message_id="rolled-back")
                raise Boom
        # The client's limits, refused before anything is staged (the block then rolls back).
        with pytest.raises(UnsupportedFeatureError, match="at most 1"):
            async with broker.transaction() as tx:
                await tx.publish(topic, {"n": 3}, message_id="second-of-two")
                await tx.publish(topic, {"n": 4})
        with pytest.raises(UnsupportedFeatureError, match="delayed"):
            async with broker.transaction() as tx:
                await tx.publish(topic, {"n": 5}, delay=5, message_id="delayed")
        with pytest.raises(UnsupportedFeatureError, match="delivery time"):
            await broker.publish(topic, {"n": 6}, delay=5, message_id="plain-delayed")
        # A plain publish to a transactional topic: a half message committed at once.
        await broker.publish(topic, {"n": 7}, message_id="plain")
        async with broker.transaction() as tx:
            await tx.publish(topic, {"n": 8}, key="customer-1", message_id="committed-2")
        # An undeclared topic, provisioned DELAY by its subscriber, is turned TRANSACTION on
        # its first transactional publish (auto_provision), with a warning.
        with caplog.at_level(logging.WARNING, logger="unimq.rocketmq"):
            async with broker.transaction() as tx:
                await tx.publish(plain, {"n": 9}, message_id="undeclared")
        assert any("not declared in transaction_topics" in r.getMessage() for r in caplog.records)
        await _until(
            lambda: (
                {"committed-1", "committed-2", "plain"} <= set(seen) and "undeclared" in seen_plain
            ),
            60,
            "the commits",
        )
        # Past transactionTimeOut + a check interval: an orphan would have been checked by now.
        await asyncio.sleep(6)
    assert sorted(seen) == ["committed-1", "committed-2", "plain"], seen
    # Ended transactions are never checked back (the broker records commits and rollbacks
    # within transactionOpBatchInterval, well inside transactionTimeOut).
    asked = [r.getMessage() for r in caplog.records if "asks whether to commit" in r.getMessage()]
    assert not asked, asked
    assert seen_plain == ["undeclared"], seen_plain


async def test_killed_producer_is_resolved_by_check_back(
    rocketmq_broker: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tag = uuid.uuid4().hex[:8]
    topic = f"txkill.{tag}"
    path = tmp_path / "orders.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE orders (id TEXT PRIMARY KEY)")
    db.commit()
    db.close()

    # The consumer first, so its group exists before any commit (it reads from its start).
    consumer = Broker(
        rocketmq_broker.url, auto_provision=True, namesrv=rocketmq_broker.namesrv_address
    )
    seen: list[str] = []

    @consumer.subscriber(topic, group=f"txkill-{tag}")
    async def handle(message: Message) -> None:
        seen.append(message.id)

    asked: list[tuple[str, bool | None]] = []

    async def check(message: Message) -> bool:
        if not asked:
            asked.append((message.id, None))
            raise RuntimeError("database unavailable (on purpose: the broker must ask again)")
        with sqlite3.connect(path) as conn:
            row = conn.execute("SELECT 1 FROM orders WHERE id = ?", (message.id,)).fetchone()
        asked.append((message.id, row is not None))
        return row is not None

    async with consumer:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CHILD),
            rocketmq_broker.url,
            rocketmq_broker.namesrv_address,
            topic,
            str(path),
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert child.stdout is not None
            line = await asyncio.wait_for(child.stdout.readline(), 60)
            assert line.strip() == b"staged", f"child said {line!r}"
        finally:
            child.send_signal(signal.SIGKILL)
            await child.wait()
        checker = _broker(rocketmq_broker, topic, transaction_checker=check)
        with caplog.at_level(logging.WARNING, logger="unimq.rocketmq.transactions"):
            async with checker:
                await _until(
                    lambda: (
                        {"order-commit", "order-rollback"} <= {i for i, v in asked if v is not None}
                    ),
                    90,
                    "the check-back of both orders",
                )
                await _until(lambda: "order-commit" in seen, 30, "the committed order")
                await asyncio.sleep(3)  # a wrongly committed rollback would arrive as fast
    assert asked[0][1] is None and any(
        "answering unknown" in r.getMessage() for r in caplog.records
    ), "the checker's exception must answer unknown, with a log line"
    assert dict((i, v) for i, v in asked if v is not None) == {
        "order-commit": True,
        "order-rollback": False,
    }
    # A check-back commit is at-least-once (the broker may ask again before it records the
    # answer, and commit each time): the copies share the unimq id, so idempotent
    # subscribers drop them. The rolled-back order must never show.
    assert set(seen) == {"order-commit"}, (seen, asked)
