"""RocketMQ transactions without a broker: the check-back bridge (client thread → event loop)
maps the application's verdict to the broker's answer, and never blocks or raises on the
client's thread; the transaction options are validated. The real-broker behaviour is in
testcontainers/tests/test_rocketmq_transactions.py."""

from __future__ import annotations

import asyncio
import gc
import logging
import warnings
from typing import Any

import pytest

pytest.importorskip("rocketmq")

from unimq_rocketmq import codec, names
from unimq_rocketmq.options import RocketMQOptions
from unimq_rocketmq.transactions import COMMIT, ROLLBACK, UNKNOWN, CheckBridge

from unimq.errors import ConfigurationError
from unimq.transport import Delivery
from unimq.url import BrokerURL


class FakeMessage:
    """What the client hands its checker: a message decoded from the check-back command."""

    def __init__(self, properties: dict[str, str] | None = None) -> None:
        self.topic = "orders_dcreated"
        self.message_id = "01ABC"
        self.body = b'{"order": 1}'
        self.keys: list[str] = []
        self.message_group = None
        self.properties = {"unimq-id": "order-1", **(properties or {})}


async def _ask(bridge: CheckBridge, message: Any = None) -> int:
    """Ask the way the client does: from another thread, blocking there."""
    return await asyncio.to_thread(bridge.check, message or FakeMessage())


@pytest.mark.parametrize(("verdict", "answer"), [(True, COMMIT), (False, ROLLBACK)])
async def test_the_verdict_is_the_answer(verdict: bool, answer: int) -> None:
    seen: list[Delivery] = []

    async def check(delivery: Delivery) -> bool:
        seen.append(delivery)
        return verdict

    bridge = CheckBridge(check, timeout=5)
    bridge.bind(asyncio.get_running_loop())
    assert await _ask(bridge) == answer
    assert seen[0].headers["unimq-id"] == "order-1" and seen[0].topic == "orders_dcreated"


async def test_an_exception_answers_unknown_with_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def check(delivery: Delivery) -> bool:
        raise RuntimeError("database down")

    bridge = CheckBridge(check, timeout=5)
    bridge.bind(asyncio.get_running_loop())
    with caplog.at_level(logging.WARNING, logger="unimq.rocketmq.transactions"):
        assert await _ask(bridge) == UNKNOWN
    assert "database down" in caplog.text and "answering unknown" in caplog.text


async def test_a_slow_checker_answers_unknown_and_is_cancelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cancelled = asyncio.Event()

    async def check(delivery: Delivery) -> bool:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return True

    bridge = CheckBridge(check, timeout=0.2)
    bridge.bind(asyncio.get_running_loop())
    with caplog.at_level(logging.WARNING, logger="unimq.rocketmq.transactions"):
        assert await _ask(bridge) == UNKNOWN
    await asyncio.wait_for(cancelled.wait(), 5)
    assert "did not answer" in caplog.text


async def test_no_checker_answers_unknown() -> None:
    bridge = CheckBridge(None, timeout=5)
    bridge.bind(asyncio.get_running_loop())
    assert await _ask(bridge) == UNKNOWN


def test_a_closed_loop_answers_unknown_without_blocking() -> None:
    async def check(delivery: Delivery) -> bool:
        return True

    loop = asyncio.new_event_loop()
    loop.close()
    bridge = CheckBridge(check, timeout=30)
    bridge.bind(loop)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert bridge.check(FakeMessage()) == UNKNOWN
        gc.collect()
    # The checker's coroutine was created for a loop that cannot run it: closed, not leaked.
    assert not [w for w in caught if "never awaited" in str(w.message)], caught


async def test_a_plain_publish_is_committed_without_asking() -> None:
    async def check(delivery: Delivery) -> bool:
        raise AssertionError("a plain publish's check-back must not reach the application")

    bridge = CheckBridge(check, timeout=5)
    bridge.bind(asyncio.get_running_loop())
    assert await _ask(bridge, FakeMessage({codec.AUTOCOMMIT: "1"})) == COMMIT


def test_transaction_options() -> None:
    url = BrokerURL.parse("rocketmq://127.0.0.1:8081?transaction_topics=orders.created,payments")
    options = RocketMQOptions.parse(url, {"transaction_check_timeout": "2.5"})
    assert options.transaction_topics == ("orders.created", "payments")
    assert options.transaction_check_timeout == 2.5
    for bad in ("0", "-1", "soon"):
        with pytest.raises(ConfigurationError, match="transaction_check_timeout"):
            RocketMQOptions.parse(url, {"transaction_check_timeout": bad})


def test_provisioning_a_transactional_subscriber_keeps_its_retry_topics_delayed() -> None:
    from unimq_rocketmq.provision import plan

    types = {
        name: attrs["message_type"]
        for kind, name, attrs in plan(
            "subscriber", "orders.created", "inventory", ordered=False, message_type="TRANSACTION"
        )
        if kind == "topic"
    }
    main = types.pop(names.topic_name("orders.created"))
    assert main == "TRANSACTION"
    assert set(types.values()) == {"DELAY"}, types  # retries and dead letters: plain publishes
