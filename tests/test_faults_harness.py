"""The fault-injection harness itself: it must see what it claims to check.

The schedule runs (``test_faults_schedules.py``) are only worth something if a lost,
unjustified, reordered or over-counted message makes them fail; these cases prove that on
recorded events and on a deliberately lossy adapter, and pin the wrapper's own promises
(reordering within what a broker allows, lost acks redelivered, optional SPI kept).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from unimq import headers as h
from unimq.clock import SystemClock
from unimq.hookspecs import hookimpl
from unimq.memory.transport import MemoryTransport
from unimq.plugins import TransportRegistry, register_plugin
from unimq.testing.faults import (
    FaultPlan,
    Faults,
    Ledger,
    Schedule,
    Target,
    report,
    run_seeds,
    seeds_from_environment,
    wrap,
)
from unimq.transport import (
    OutgoingMessage,
    SubscriptionSpec,
    SupportsDeclareTopic,
    SupportsWaitIdle,
    TransportContext,
)
from unimq.url import BrokerURL


@pytest.fixture(autouse=True)
def quiet_logs() -> Iterator[None]:
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


def one_subscriber_schedule(*, ordered: bool, max_attempts: int = 2) -> Schedule:
    schedule = Schedule.generate(1, FaultPlan())
    plan = schedule.subscribers[0]
    from dataclasses import replace

    plan = replace(plan, index=0, ordered=ordered, max_attempts=max_attempts)
    return replace(schedule, subscribers=(plan,), publishes=())


def message(topic: str, message_id: str, attempt: int = 1) -> OutgoingMessage:
    return OutgoingMessage(
        topic, b"x", {h.ID: message_id, h.ATTEMPT: str(attempt)}, message_id=message_id
    )


class FakeDelivery:
    def __init__(self, topic: str, message_id: str, attempt: int = 1) -> None:
        self.topic = topic
        self.key: str | None = None
        self.headers: Mapping[str, str] = {h.ID: message_id, h.ATTEMPT: str(attempt)}
        self.body = b"x"
        self.native_id = message_id

    async def ack(self) -> None:
        pass


# -- the ledger sees each broken invariant ----------------------------------------------------


def test_ledger_passes_a_clean_run() -> None:
    ledger = Ledger(one_subscriber_schedule(ordered=False))
    topic = "faults.t0"
    ledger.expect(0, "m1", None)
    ledger.published(message(topic, "m1"))
    ledger.started(0, "m1", 1, "fail")
    ledger.published(message("faults.t0.g.retry", "m1", attempt=2))
    ledger.acked(FakeDelivery(topic, "m1"))
    ledger.started(0, "m1", 2, "ok")
    ledger.succeeded(0, "m1", 2)
    ledger.acked(FakeDelivery("faults.t0.g.retry", "m1", attempt=2))
    assert ledger.violations() == []


def test_ledger_sees_a_lost_message() -> None:
    ledger = Ledger(one_subscriber_schedule(ordered=False))
    ledger.expect(0, "m1", None)
    ledger.started(0, "m1", 1, "fail")
    [violation] = ledger.violations()
    assert "m1 lost" in violation


def test_ledger_sees_an_ack_before_the_dead_letter_copy() -> None:
    ledger = Ledger(one_subscriber_schedule(ordered=False, max_attempts=1))
    ledger.expect(0, "m1", None)
    ledger.started(0, "m1", 1, "fail")
    ledger.acked(FakeDelivery("faults.t0", "m1"))  # acked first ...
    ledger.published(message("faults.t0.g.dlq", "m1"))  # ... copied after
    [violation] = ledger.violations()
    assert "acked with no success and no retry or dead-letter copy published before" in violation


def test_ledger_sees_an_ack_covered_only_by_its_own_retry_copy() -> None:
    """Attempt 2's ack needs an attempt-3 copy (or success, or dead letter), not attempt 2's."""
    ledger = Ledger(one_subscriber_schedule(ordered=False, max_attempts=3))
    retry = "faults.t0.g.retry"
    ledger.expect(0, "m1", None)
    ledger.published(message(retry, "m1", attempt=2))
    ledger.acked(FakeDelivery(retry, "m1", attempt=2))
    ledger.published(message("faults.t0.g.dlq", "m1"))
    assert any("acked with no success" in v for v in ledger.violations())


def test_ledger_sees_keys_out_of_order_on_an_ordered_subscriber() -> None:
    ledger = Ledger(one_subscriber_schedule(ordered=True))
    ledger.expect(0, "m1", "k")
    ledger.expect(0, "m2", "k")
    ledger.succeeded(0, "m2", 1)
    ledger.succeeded(0, "m1", 1)
    [violation] = ledger.violations()
    assert "key 'k' resolved out of publish order" in violation


def test_ledger_sees_attempt_gaps_and_attempts_past_the_limit() -> None:
    ledger = Ledger(one_subscriber_schedule(ordered=False, max_attempts=2))
    ledger.expect(0, "m1", None)
    ledger.started(0, "m1", 1, "fail")
    ledger.started(0, "m1", 3, "ok")
    ledger.succeeded(0, "m1", 3)
    found = ledger.violations()
    assert any("attempts [1, 3] have a gap" in v for v in found)
    assert any("attempt 3 > max_attempts 2" in v for v in found)


# -- a broken adapter fails the schedules --------------------------------------------------------


class LossyTransport(MemoryTransport):
    """The memory transport, but every 5th publish is acknowledged and silently dropped."""

    def __init__(self, url: BrokerURL, options: Mapping[str, Any], context: Any) -> None:
        super().__init__(url, options, context)
        self.count = 0

    async def publish(self, message: OutgoingMessage) -> None:
        self.count += 1
        if self.count % 5:
            await super().publish(message)


class _LossyPlugin:
    @hookimpl
    def unimq_register_transports(self, registry: TransportRegistry) -> None:
        registry.add("lossy", LossyTransport, "memory, losing every 5th publish (tests)")


async def test_the_runner_catches_an_adapter_that_loses_messages() -> None:
    register_plugin(_LossyPlugin(), name="unimq-test-lossy")
    target = Target("lossy", "lossy://", virtual_time=True, ordering=True, settle_within=1)
    results = await run_seeds(range(6), target, FaultPlan())
    assert all(not result.ok for result in results)
    text = report(results, lambda seed: f"UNIMQ_FAULT_SEED={seed} pytest x")
    assert "lost" in text or "stuck" in text
    assert "replay: UNIMQ_FAULT_SEED=0 pytest x" in text


# -- the wrapper's own promises ----------------------------------------------------------------


def memory_transport(name: str) -> MemoryTransport:
    context = TransportContext(clock=SystemClock(), instance_id="test")
    return MemoryTransport(BrokerURL.parse(f"memory://{name}"), {}, context)


def test_wrap_keeps_the_optional_spi_of_the_inner_transport() -> None:
    wrapped = wrap(memory_transport("wrap-spi"), Faults(1, FaultPlan()))
    assert isinstance(wrapped, SupportsWaitIdle) and isinstance(wrapped, SupportsDeclareTopic)
    from unimq_toy.transport import ToyTransport

    context = TransportContext(clock=SystemClock(), instance_id="test")
    toy = ToyTransport(BrokerURL.parse("toy://wrap-spi"), {}, context)
    assert not isinstance(wrap(toy, Faults(1, FaultPlan())), SupportsWaitIdle)


@pytest.mark.parametrize("ordered", [True, False])
async def test_reordering_never_overtakes_a_key_on_an_ordered_subscription(ordered: bool) -> None:
    faults = Faults(7, FaultPlan(reorder=0.7, redeliver=0.2))
    transport = wrap(memory_transport(f"reorder-{ordered}"), faults)
    await transport.connect()
    spec = SubscriptionSpec(topic="t", group="g", prefetch=4, ordered=ordered)
    subscription = await transport.subscribe(spec)
    sent = [(f"m{n}", "ab"[n % 2]) for n in range(40)]
    for message_id, key in sent:
        await transport.publish(
            OutgoingMessage("t", b"x", {h.ID: message_id}, key=key, message_id=message_id)
        )
    got: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    while len(seen) < len(sent):
        delivery = await asyncio.wait_for(subscription.receive(), 5)
        assert delivery is not None
        message_id = delivery.headers[h.ID]
        if message_id not in seen:
            seen.add(message_id)
            got.append((message_id, delivery.key))
        await delivery.ack()
    await transport.close()
    assert faults.injected["reorder"] > 0
    for key in "ab":
        published = [m for m, k in sent if k == key]
        first_seen = [m for m, k in got if k == key]
        if ordered:
            assert first_seen == published, key
    if not ordered:
        assert [m for m, _ in got] != [m for m, _ in sent], "the plan should reorder"


async def test_a_lost_ack_is_redelivered() -> None:
    faults = Faults(1, FaultPlan(ack_lost=1.0))
    transport = wrap(memory_transport("lost-ack"), faults)
    await transport.connect()
    subscription = await transport.subscribe(SubscriptionSpec(topic="t", group="g", prefetch=1))
    await transport.publish(message("t", "m1"))
    first = await asyncio.wait_for(subscription.receive(), 5)
    assert first is not None
    await first.ack()  # lost
    again = await asyncio.wait_for(subscription.receive(), 5)
    assert again is not None and again.native_id == first.native_id
    faults.active = False
    await again.ack()
    assert isinstance(transport, SupportsWaitIdle)
    await asyncio.wait_for(transport.wait_idle(), 5)  # settled for real now
    await transport.close()


def test_plans_name_their_kinds_and_refuse_unknown_ones() -> None:
    plan = FaultPlan.default()
    assert "outage" not in plan.without("outage").kinds()
    assert plan.only("stall").kinds() == ["stall"]
    with pytest.raises(ValueError, match="unknown fault kinds"):
        plan.only("earthquake")


def test_seeds_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert seeds_from_environment(range(3)) == [0, 1, 2]
    monkeypatch.setenv("UNIMQ_FAULT_SEED", "1234")
    assert seeds_from_environment(range(3)) == [1234]
    monkeypatch.setenv("UNIMQ_FAULT_SEED", "5, 6")
    assert seeds_from_environment(range(3)) == [5, 6]
    monkeypatch.setenv("UNIMQ_FAULT_SEED", "random:4")
    assert len(seeds_from_environment(range(3))) == 4


def test_a_seed_gives_the_same_schedule_every_time() -> None:
    plan = FaultPlan.default()
    assert Schedule.generate(99, plan) == Schedule.generate(99, plan)
    assert Schedule.generate(99, plan) != Schedule.generate(100, plan)
