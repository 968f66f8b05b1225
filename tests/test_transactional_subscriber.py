"""``@subscriber(transactional=True)`` in the core, without a broker that has transactions.

A memory transport given a staging ``begin_consume_transaction`` (commit publishes what the
attempt staged, rollback drops it) shows the pipeline's side of the contract: what a failed,
nacked or rejected attempt published is never delivered, a successful one's outputs are,
exactly once, and retries stay in place. The Kafka transactions themselves are tested on the
real broker (testcontainers/tests/test_transactions_kafka.py, conformance cases_transactions).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from unimq import (
    Broker,
    ConfigurationError,
    Message,
    RetryPolicy,
    UnimqError,
    UnsupportedFeatureError,
)
from unimq.delivery.transactional import REFUSED_COMMIT_RERUNS
from unimq.memory.transport import MemoryTransport
from unimq.transport import ConsumeCommitRefused, Delivery, OutgoingMessage


class StagedTransaction:
    def __init__(self, transport: MemoryTransport, log: list[str]) -> None:
        self._transport = transport
        self._staged: list[OutgoingMessage] = []
        self._log = log

    async def publish(self, message: OutgoingMessage) -> None:
        self._staged.append(message)

    async def commit(self) -> None:
        self._log.append("commit")
        for message in self._staged:
            await MemoryTransport.publish(self._transport, message)

    async def rollback(self) -> None:
        self._log.append("rollback")


class TransactionalMemory(MemoryTransport):
    log: list[str]

    async def begin_consume_transaction(self, delivery: Delivery) -> StagedTransaction:
        return StagedTransaction(self, self.log)


def _broker() -> tuple[Broker, list[str]]:
    broker = Broker("memory://")
    log: list[str] = []
    broker.transport.__class__ = TransactionalMemory  # the staging SPI hook, nothing else
    broker.transport.log = log  # type: ignore[attr-defined]
    return broker, log


FAST = RetryPolicy(max_attempts=3, backoff=lambda attempt: 0.001)


async def _run(broker: Broker, inputs: int, done: Any) -> None:
    async with broker:
        for index in range(inputs):
            await broker.publish("in", f"{index}".encode())
        for _ in range(500):
            if done():
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # anything extra would arrive now


async def test_failed_attempts_outputs_never_delivered() -> None:
    broker, log = _broker()
    attempts: dict[str, int] = {}
    outputs: list[bytes] = []

    @broker.subscriber("in", concurrency=1, transactional=True, retry=FAST)
    async def transform(message: Message) -> None:
        await broker.publish("out", message.body)
        attempts[message.id] = attempts.get(message.id, 0) + 1
        if attempts[message.id] == 1:
            raise RuntimeError("after the publish")

    @broker.subscriber("out")
    async def read(message: Message) -> None:
        outputs.append(message.body)

    await _run(broker, 5, lambda: len(outputs) >= 5)
    assert sorted(outputs) == [f"{i}".encode() for i in range(5)]
    assert log.count("rollback") == 5 and log.count("commit") == 5
    assert set(attempts.values()) == {2}, "retried in place, once each"


class RefusingTransaction(StagedTransaction):
    """Commits refused as by a Kafka rebalance (ILLEGAL_GENERATION) while ``refusals`` last."""

    refusals = 0

    async def commit(self) -> None:
        if RefusingTransaction.refusals > 0:
            RefusingTransaction.refusals -= 1
            self._log.append("refused")
            raise ConsumeCommitRefused("the group rebalanced")
        await super().commit()


class RefusingMemory(MemoryTransport):
    log: list[str]

    async def begin_consume_transaction(self, delivery: Delivery) -> StagedTransaction:
        return RefusingTransaction(self, self.log)


@pytest.mark.parametrize("refusals", [1, 3, 5])
async def test_commit_refused_by_a_rebalance_is_not_an_attempt(refusals: int) -> None:
    """A rebalance refusing the commit re-runs the attempt without counting it: with
    ``max_attempts=2`` and a handler failing once, refused commits never dead-letter it."""
    broker = Broker("memory://")
    log: list[str] = []
    broker.transport.__class__ = RefusingMemory
    broker.transport.log = log  # type: ignore[attr-defined]
    RefusingTransaction.refusals = refusals
    attempts: list[int] = []
    outputs: list[bytes] = []
    dead: list[bytes] = []

    @broker.subscriber(
        "in",
        group="tx",
        concurrency=1,
        transactional=True,
        retry=RetryPolicy(max_attempts=2, backoff=lambda attempt: 0.001),
    )
    async def transform(message: Message) -> None:
        await broker.publish("out", message.body)
        attempts.append(message.attempt)
        if message.attempt == 1:
            raise RuntimeError("the first attempt fails")

    @broker.subscriber("out")
    async def read(message: Message) -> None:
        outputs.append(message.body)

    @broker.subscriber("in.tx.dlq", group="dlq")
    async def letters(message: Message) -> None:
        dead.append(message.body)

    await _run(broker, 1, lambda: len(outputs) + len(dead) >= 1)
    assert dead == [] and outputs == [b"0"]
    assert attempts == [1] + [2] * (refusals + 1), "re-runs keep the attempt number"
    assert log.count("refused") == refusals


async def test_commit_refused_without_end_counts_after_the_bound() -> None:
    """Refusals without end still end: after REFUSED_COMMIT_RERUNS re-runs the attempt fails
    (and the policy's last attempt dead-letters it), never an endless loop."""
    broker = Broker("memory://")
    log: list[str] = []
    broker.transport.__class__ = RefusingMemory
    broker.transport.log = log  # type: ignore[attr-defined]
    RefusingTransaction.refusals = 10**6
    dead: list[bytes] = []

    @broker.subscriber(
        "in",
        group="tx",
        concurrency=1,
        transactional=True,
        retry=RetryPolicy(max_attempts=2, backoff=lambda attempt: 0.001),
    )
    async def transform(message: Message) -> None:
        await broker.publish("out", message.body)

    @broker.subscriber("in.tx.dlq", group="dlq")
    async def letters(message: Message) -> None:
        dead.append(message.body)

    try:
        await _run(broker, 1, lambda: len(dead) >= 1)
    finally:
        RefusingTransaction.refusals = 0
    assert dead == [b"0"]
    assert log.count("refused") == 2 * (REFUSED_COMMIT_RERUNS + 1)


async def test_publish_batch_joins_the_transaction() -> None:
    broker, _ = _broker()
    outputs: list[bytes] = []
    failed: set[str] = set()

    @broker.subscriber("in", concurrency=1, transactional=True, retry=FAST)
    async def transform(message: Message) -> None:
        await broker.publish_batch("out", [message.body + b"a", message.body + b"b"])
        if message.id not in failed:
            failed.add(message.id)
            raise RuntimeError("after the batch")

    @broker.subscriber("out")
    async def read(message: Message) -> None:
        outputs.append(message.body)

    await _run(broker, 2, lambda: len(outputs) >= 4)
    assert sorted(outputs) == [b"0a", b"0b", b"1a", b"1b"]


async def test_nack_and_reject_abort_the_transaction() -> None:
    broker, log = _broker()
    outputs: list[bytes] = []
    dead: list[bytes] = []
    nacked: set[str] = set()

    @broker.subscriber("in", group="tx", concurrency=1, transactional=True, retry=FAST)
    async def transform(message: Message) -> None:
        await broker.publish("out", message.body)
        if message.body == b"0":
            await message.reject("no")
        elif message.id not in nacked:
            nacked.add(message.id)
            await message.nack()

    @broker.subscriber("out")
    async def read(message: Message) -> None:
        outputs.append(message.body)

    @broker.subscriber("in.tx.dlq", group="dlq")
    async def dlq(message: Message) -> None:
        dead.append(message.body)

    await _run(broker, 2, lambda: outputs and dead)
    assert outputs == [b"1"], "a rejected or nacked attempt's output was delivered"
    assert dead == [b"0"]
    assert sorted(log) == ["commit", "rollback", "rollback"]


async def test_publish_outside_a_transactional_handler_is_immediate() -> None:
    broker, log = _broker()
    outputs: list[bytes] = []

    @broker.subscriber("out")
    async def read(message: Message) -> None:
        outputs.append(message.body)

    async with broker:
        await broker.publish("out", b"plain")
        await broker.drain(timeout=5)
    assert outputs == [b"plain"] and log == []


async def test_nested_broker_transaction_refused() -> None:
    broker, _ = _broker()
    errors: list[BaseException] = []

    @broker.subscriber("in", concurrency=1, transactional=True, retry=RetryPolicy(max_attempts=1))
    async def transform(message: Message) -> None:
        try:
            async with broker.transaction():
                pass
        except UnimqError as error:
            errors.append(error)

    await _run(broker, 1, lambda: errors)
    assert errors and "already in a transaction" in str(errors[0])


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({}, "concurrency=1"),
        ({"concurrency": 1, "ack": "manual"}, "ack='auto'"),
        ({"concurrency": 1, "batch": __import__("unimq").BatchPolicy()}, "batch="),
    ],
)
def test_incompatible_options_refused(options: dict[str, Any], named: str) -> None:
    broker, _ = _broker()
    with pytest.raises(UnsupportedFeatureError, match=named):

        @broker.subscriber("in", transactional=True, **options)
        async def transform(message: list[bytes]) -> None: ...


def test_not_a_boolean_refused() -> None:
    broker, _ = _broker()
    with pytest.raises(ConfigurationError, match="transactional must be True or False"):

        @broker.subscriber("in", concurrency=1, transactional="yes")  # type: ignore[arg-type]
        async def transform(message: Message) -> None: ...


def test_memory_backend_refuses_transactional() -> None:
    broker = Broker("memory://")
    with pytest.raises(UnsupportedFeatureError, match="outbox"):

        @broker.subscriber("in", concurrency=1, transactional=True)
        async def transform(message: Message) -> None: ...


async def test_kafka_transactional_id_option() -> None:
    pytest.importorskip("confluent_kafka")
    from unimq_kafka.options import parse_settings

    from unimq.url import BrokerURL

    url = BrokerURL.parse("kafka://127.0.0.1:9092")
    assert parse_settings(url, {"transactional_id": "orders-1"}).transactional_id == "orders-1"
    with pytest.raises(ConfigurationError, match="transactional_id"):
        parse_settings(url, {"transactional_id": "has space"})
    with pytest.raises(ConfigurationError, match="cannot be overridden"):
        parse_settings(url, {"librdkafka_producer": {"transactional.id": "x"}})
    await asyncio.sleep(0)
