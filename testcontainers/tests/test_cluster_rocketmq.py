"""Failover on a two-broker RocketMQ cluster (``rocketmq_cluster_broker``, issue 15).

5,000 messages flow through a subscriber with ``idempotent=True`` (some fail once and are
retried, some are delayed by a few seconds, some are rejected into the DLQ by design) and 400
keyed messages through an ordered subscriber, while one node (its broker and its proxy) is
SIGKILLed mid-flow and started again. The publisher keeps publishing throughout; a publish the
cluster refused is published again with the same message id (a refused publish that was in fact
stored is then a duplicate, dropped by idempotency).

Asserted: every confirmed message handled (none lost), each handled once, every delayed message
arrives (late by at most the outage: the bound is explained where it is asserted, and in
docs/deployment.md), the DLQ holds exactly the rejected ones, and the ordered subscriber saw
each key in publish order up to the kill. After the kill RocketMQ does
not keep per-key order for keys whose queue was on the dead broker (their later messages move to
the live broker while the earlier ones wait on the dead one): the figure is recorded, not
asserted (docs/deployment.md, RocketMQ).

``test_failover_kill_broker``: the node the clients are *not* connected to (its broker holds
half the queues). ``test_failover_kill_connected_node``: the node whose proxy holds the clients'
gRPC connections (and half the queues): the clients move to the other proxy.

Negative check (not run in CI): ``UNIMQ_RMQ_CLUSTER_NEGATIVE=1`` provisions every topic on ONE
broker only (``broker_addresses=`` that broker) and kills that broker without restarting it:
the test must then fail (messages stranded).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections import Counter, defaultdict
from typing import Any

import pytest

from unimq import Broker, Message, Reject, RetryPolicy, fixed
from unimq.errors import UnimqError
from unimq.idempotency import MemoryIdempotencyStore
from unimq.naming import dead_letter_topic

pytest.importorskip("rocketmq")

pytestmark = [
    pytest.mark.realbroker,
    pytest.mark.asyncio,
]

TOTAL = 5000
ORDERED = 400
KEYS = 8
DELAY = 3.0
#: publishes per second (main flow); the ordered flow goes at a tenth of it
RATE = 120.0
NEGATIVE = os.environ.get("UNIMQ_RMQ_CLUSTER_NEGATIVE") == "1"
#: seconds to wait, once the flows ended, for every message to be handled
DRAIN = float(os.environ.get("UNIMQ_RMQ_CLUSTER_DRAIN", "240"))


class CountingStore(MemoryIdempotencyStore):
    """Counts the deliveries idempotency dropped as already handled."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    async def begin(self, group: str, message_id: str, lease: float) -> bool:
        first = await super().begin(group, message_id, lease)
        if not first:
            self.dropped += 1
        return first


def kind_of(i: int) -> str:
    if i % 50 == 0:
        return "dlq"
    if i % 25 == 7:
        return "delayed"
    if i % 10 == 3:
        return "fail-once"
    return "ok"


async def _wait(predicate: Any, timeout: float, what: str, report: Any) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}: {report()}")
        await asyncio.sleep(0.25)


def _inversions(values: list[int]) -> int:
    """How many neighbours are out of order."""
    return sum(1 for i in range(1, len(values)) if values[i] < values[i - 1])


def _established_ports() -> Counter[int]:
    """Remote ports of this process's established IPv4 TCP connections (from /proc: which
    sockets are ours from /proc/self/fd, their peers from /proc/net/tcp)."""
    ours = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            ours.add(target[8:-1])
    ports: Counter[int] = Counter()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):  # gRPC may use v4-mapped IPv6 sockets
        with open(path) as table:
            next(table)
            for line in table:
                fields = line.split()
                remote, state, inode = fields[2], fields[3], fields[9]
                if state == "01" and inode in ours:
                    ports[int(remote.rsplit(":", 1)[1], 16)] += 1
    return ports


def _connected_node(cluster: Any) -> str:
    """A node whose proxy this process's gRPC channels use, from the established TCP
    connections. gRPC picks one of the addresses per channel, but the process's clients do not
    always pick the same one (seen once: connections to both proxies); any node the clients use
    is one whose death they must survive, so the first by name is taken."""
    ports = {cluster.proxy_port(node): node for node in cluster.nodes}
    used = {ports[port] for port in _established_ports() if port in ports}
    assert used, "the clients use no proxy of the cluster"
    return sorted(used)[0]


async def _failover(cluster: Any, *, connected: bool) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:8]
    topic, group = f"cluster.{suffix}.orders", f"cluster-{suffix}"
    otopic, ogroup = f"cluster.{suffix}.ordered", f"cluster-{suffix}-ordered"
    dlq_topic = dead_letter_topic(topic, group)
    store = CountingStore()
    provision: dict[str, Any] = {"namesrv": cluster.namesrv_address}
    if NEGATIVE:
        provision = {"broker_addresses": cluster.broker_address_of(cluster.nodes[-1])}
    options: dict[str, Any] = {
        "auto_provision": True,
        "invisible_duration": 10,
        "idempotency_store": store,
        **provision,
    }
    broker = Broker(cluster.url, **options)

    handled: Counter[str] = Counter()
    attempts: Counter[str] = Counter()
    lateness: list[float] = []
    #: lateness of the delayed messages handled before the kill: the queueing delay the load
    #: alone causes (a delayed message joins the end of its queue when due)
    before_kill: list[float] = []
    killed = False
    #: when each message's publish was confirmed (wall clock), and how long each ordinary
    #: message then waited to be handled: the cost of the failover to any message, the
    #: yardstick of the delayed ones (below)
    confirmed_at: dict[str, float] = {}
    waits: list[float] = []
    letters: Counter[str] = Counter()
    seen: dict[str, list[int]] = defaultdict(list)
    seen_at: dict[str, list[float]] = defaultdict(list)

    @broker.subscriber(
        topic,
        group=group,
        idempotent=True,
        concurrency=32,
        retry=RetryPolicy(max_attempts=4, backoff=fixed(1.0)),
    )
    async def handle(message: Message) -> None:
        attempts[message.id] += 1
        body = json.loads(message.body)
        kind = body["kind"]
        if kind == "dlq":
            raise Reject("by design")
        if kind == "fail-once" and message.attempt == 1:
            raise RuntimeError("failing once by design")
        if kind == "delayed" and message.due is not None:
            lateness.append(time.time() - message.due)
            if not killed:
                before_kill.append(time.time() - message.due)
        if kind == "ok" and message.id in confirmed_at:
            waits.append(time.time() - confirmed_at[message.id])
        handled[message.id] += 1

    @broker.subscriber(dlq_topic, group=f"{group}-dlq-reader", concurrency=8)
    async def dead(message: Message) -> None:
        letters[message.id] += 1

    @broker.subscriber(otopic, group=ogroup, ordered=True, idempotent=True)
    async def ordered(message: Message) -> None:
        body = json.loads(message.body)
        seen[body["key"]].append(body["seq"])
        seen_at[body["key"]].append(time.monotonic())

    confirmed: set[str] = set()
    refused = 0
    ordered_confirmed: set[str] = set()

    async def publish(topic_: str, body: dict[str, Any], mid: str, **kw: Any) -> None:
        nonlocal refused
        while True:
            try:
                await broker.publish(topic_, json.dumps(body).encode(), message_id=mid, **kw)
                return
            except UnimqError:
                refused += 1
                await asyncio.sleep(0.5)

    async def main_flow() -> None:
        pending: set[asyncio.Task[None]] = set()
        t0 = time.monotonic()
        for i in range(TOTAL):
            mid = f"m-{suffix}-{i}"
            kind = kind_of(i)
            kw = {"delay": DELAY} if kind == "delayed" else {}

            async def one(mid: str = mid, kind: str = kind, kw: dict[str, Any] = kw) -> None:
                await publish(topic, {"kind": kind}, mid, **kw)
                confirmed_at[mid] = time.time()
                confirmed.add(mid)

            task = asyncio.ensure_future(one())
            pending.add(task)
            task.add_done_callback(pending.discard)
            ahead = t0 + (i + 1) / RATE - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
        await asyncio.gather(*pending)

    async def ordered_flow() -> None:
        # one key after the other per key (a key's next publish waits for its confirm)
        async def key_flow(k: int) -> None:
            for seq in range(ORDERED // KEYS):
                mid = f"o-{suffix}-{k}-{seq}"
                await publish(otopic, {"key": f"k{k}", "seq": seq}, mid, key=f"k{k}")
                ordered_confirmed.add(mid)
                await asyncio.sleep(KEYS * 10 / RATE)

        await asyncio.gather(*(key_flow(k) for k in range(KEYS)))

    async def progress() -> None:
        t0 = time.monotonic()
        while True:
            await asyncio.sleep(5)
            print(
                f"  {time.monotonic() - t0:5.0f}s confirmed {len(confirmed)} handled "
                f"{len(handled)} letters {len(letters)} ordered {sum(map(len, seen.values()))} "
                f"refused {refused} dropped {store.dropped}",
                flush=True,
            )

    await broker.start()
    reporter = asyncio.ensure_future(progress())
    victim = ""
    figures: dict[str, Any] = {}
    try:
        flows = asyncio.gather(main_flow(), ordered_flow())
        # (a wait for progress, not a speed target: a CI run handled 27 in the first 120 s)
        await _wait(lambda: len(handled) >= TOTAL * 0.3, 240, "30% handled", lambda: len(handled))
        victim = _connected_node(cluster) if connected else ""
        if not victim:
            used = _connected_node(cluster)
            victim = next(n for n in cluster.nodes if n != used)
        if NEGATIVE:
            victim = cluster.nodes[-1]
        in_flight = len(confirmed) - len(handled) - sum(1 for m in letters)
        handled_at_kill = {key: len(v) for key, v in seen.items()}
        t_kill = time.monotonic()
        killed = True
        await asyncio.to_thread(cluster.kill, victim)
        await asyncio.sleep(5)  # publishing and consuming go on without the node
        if not NEGATIVE:
            await asyncio.to_thread(cluster.start, victim)
        t_back = time.monotonic()
        outage = t_back - t_kill
        await flows
        expected_dlq = {f"m-{suffix}-{i}" for i in range(TOTAL) if kind_of(i) == "dlq"}
        expected_handled = confirmed - expected_dlq

        def report() -> str:
            lost = expected_handled - set(handled)
            return (
                f"handled {len(handled)}/{len(expected_handled)}, lost so far {len(lost)} "
                f"(e.g. {sorted(lost)[:3]}), letters {len(letters)}/{len(expected_dlq)}, "
                f"ordered {sum(map(len, seen.values()))}/{len(ordered_confirmed)}"
            )

        await _wait(
            lambda: (
                set(handled) >= expected_handled
                and set(letters) >= expected_dlq
                and sum(len(set(v)) for v in seen.values()) >= len(ordered_confirmed)
            ),
            DRAIN,
            "every confirmed message",
            report,
        )
        recovered = time.monotonic() - t_kill
        await asyncio.sleep(2)  # late duplicates would show now
        figures = {
            "victim": victim,
            "in_flight_at_kill": in_flight,
            "lost": len(expected_handled - set(handled)),
            "duplicates_dropped": store.dropped,
            "publishes_refused_and_repeated": refused,
            "max_delay_lateness_s": round(max(lateness, default=0.0), 1),
            "max_delay_lateness_before_kill_s": round(max(before_kill, default=0.0), 1),
            "max_ordinary_wait_s": round(max(waits, default=0.0), 1),
            "outage_s": round(outage, 1),
            "time_to_recover_s": round(recovered, 1),
            "dlq_letters": len(letters),
            "ordered_violations_after_kill": sum(
                _inversions(values[handled_at_kill.get(key, 0) :]) for key, values in seen.items()
            ),
        }
        print(
            f"\nrocketmq cluster failover ({'connected' if connected else 'other'} node): {figures}"
        )

        assert set(handled) == expected_handled, report()
        assert all(n == 1 for n in handled.values()), "a message was handled twice"
        assert set(letters) == expected_dlq, "the DLQ must hold exactly the rejected messages"
        assert len(lateness) == sum(1 for i in range(TOTAL) if kind_of(i) == "delayed")
        # Late by at most the outage: on top of the queueing the load alone caused before the
        # kill, or by at most what the failover cost an ordinary message (one stranded on the
        # killed node waits for its restart, its recovery and the backlog behind it: on a
        # loaded machine that exceeds the first figure, seen in CI). A delayed message must
        # not come later than both: its delay must add nothing to the failover's cost.
        strict = outage + max(before_kill, default=0.0)
        bound = max(strict, max(waits, default=0.0)) + 15.0
        assert max(lateness) <= bound, (
            f"a delayed message came {max(lateness):.1f}s late; outage + queueing before the "
            f"kill {strict:.1f}s, the longest wait of an ordinary message "
            f"{max(waits, default=0.0):.1f}s"
        )
        for key, values in seen.items():
            before = values[: handled_at_kill.get(key, 0)]
            assert before == sorted(before), f"key {key} out of order before the kill: {before}"
            assert set(values) == set(range(ORDERED // KEYS)), f"key {key} lost messages"
    finally:
        reporter.cancel()
        await broker.stop()
        # leave the cluster whole for the next test
        # node_ready runs its own event loop (asyncio.run): called on this one it failed and
        # said "not ready" every time
        if victim and not NEGATIVE and not await asyncio.to_thread(cluster.node_ready, victim):
            await asyncio.to_thread(cluster.start, victim)
    return figures


#: The failover tests' own deadlines (30 % handled within 240 s, the flows, a node's restart,
#: DRAIN) add up to more than pytest-timeout's 300 s: a loaded CI worker took longer than that
#: once (about 80 s on a quiet machine), and the timeout cut the test off before its own
#: deadlines could name what was slow.
FAILOVER_TIMEOUT = 900


@pytest.mark.timeout(FAILOVER_TIMEOUT)
async def test_failover_kill_broker(rocketmq_cluster_broker: Any) -> None:
    await _failover(rocketmq_cluster_broker, connected=False)


@pytest.mark.timeout(FAILOVER_TIMEOUT)
async def test_failover_kill_connected_node(rocketmq_cluster_broker: Any) -> None:
    await _failover(rocketmq_cluster_broker, connected=True)


LIVE_MESSAGES = 500


async def test_one_broker_down_publishes_and_consumption_go_on_on_the_other(
    rocketmq_cluster_broker: Any,
) -> None:
    """Issue 15, Deliver 3: with one broker of two SIGKILLed, every publish lands on the live
    one (a publish refused while the route still names the dead broker is published again,
    same id) and every message is consumed there, while the dead one stays down."""
    cluster = rocketmq_cluster_broker
    suffix = uuid.uuid4().hex[:8]
    topic, group = f"cluster.{suffix}.live", f"cluster-{suffix}-live"
    broker = Broker(cluster.url, auto_provision=True, namesrv=cluster.namesrv_address)
    handled: Counter[str] = Counter()

    @broker.subscriber(topic, group=group, concurrency=16)
    async def handle(message: Message) -> None:
        handled[message.id] += 1

    await broker.start()
    used = _connected_node(cluster)
    victim = next(n for n in cluster.nodes if n != used)
    refused = 0
    try:
        await broker.publish(topic, b"before")  # the route and the topic are known
        await _wait(lambda: len(handled) >= 1, 60, "the first message", lambda: len(handled))
        await asyncio.to_thread(cluster.kill, victim)
        t_kill = time.monotonic()
        ids = [f"live-{suffix}-{i}" for i in range(LIVE_MESSAGES)]
        for mid in ids:
            deadline = time.monotonic() + 60
            while True:
                try:
                    await broker.publish(topic, b"x", message_id=mid)
                    break
                except UnimqError:
                    refused += 1
                    assert time.monotonic() < deadline, f"{mid} refused for 60 s"
                    await asyncio.sleep(0.2)
        await _wait(
            lambda: set(ids) <= set(handled),
            120,
            "every message published during the outage to be handled",
            lambda: f"{len(set(ids) & set(handled))} of {len(ids)}",
        )
        took = time.monotonic() - t_kill
        print(
            f"\nrocketmq cluster, {victim} down: {len(ids)} published and handled in "
            f"{took:.1f}s, {refused} publishes refused and sent again"
        )
    finally:
        await broker.stop()
        await asyncio.to_thread(cluster.start, victim)


BACKLOG = 480
#: seconds the proxy keeps a route (``PROXY_ROUTE_REFRESH`` of the cluster) plus margin
ROUTE_SETTLE = 6.0


async def test_a_backlog_on_one_broker_drains_while_the_other_is_empty(
    rocketmq_cluster_broker: Any,
) -> None:
    """Issue 15: after a master's outage, the restarted one holds a backlog (and its delayed
    messages and unacked deliveries behind it) while the other is drained. The client's
    round-robin receive alternated brokers, so every other receive was an empty long poll
    (``await_duration``, 5 s) and the backlog drained at one batch per long poll: the killed
    broker's delayed messages came 5-7 minutes late. The adapter now receives from each broker
    separately (``unimq_rocketmq.brokers``). Here the backlog is built directly: the group
    starts reading the topic while it exists on one broker only (a group's first pop starts at
    the end of a queue), the backlog is published there, then the topic is created on the
    other broker too and the group reads both."""
    cluster = rocketmq_cluster_broker
    suffix = uuid.uuid4().hex[:8]
    topic, group = f"cluster.{suffix}.backlog", f"cluster-{suffix}-backlog"
    full = cluster.broker_address_of(cluster.nodes[-1])
    handled: Counter[str] = Counter()

    def reader(**provision: Any) -> Broker:
        broker = Broker(cluster.url, auto_provision=True, **provision)

        @broker.subscriber(topic, group=group, concurrency=16)
        async def handle(message: Message) -> None:
            handled[message.id] += 1

        return broker

    one = Broker(cluster.url, auto_provision=True, broker_addresses=full)
    early = reader(broker_addresses=full)
    await one.start()
    try:
        first = await one.publish(topic, b"first")
        await early.start()
        try:
            await _wait(
                lambda: first.message_id in handled, 120, "the first message", lambda: handled
            )
        finally:
            await early.stop()
        receipts = await asyncio.gather(*(one.publish(topic, b"x") for _ in range(BACKLOG)))
    finally:
        await one.stop()
    ids = {receipt.message_id for receipt in receipts}
    other = Broker(cluster.url, auto_provision=True, namesrv=cluster.namesrv_address)
    await other.start()
    try:  # creates the topic on the other broker
        ids.add((await other.publish(topic, b"y")).message_id)
    finally:
        await other.stop()
    await asyncio.sleep(ROUTE_SETTLE)  # the proxy's routes name both brokers
    both = reader(namesrv=cluster.namesrv_address)
    await both.start()
    t0 = time.monotonic()
    try:
        await _wait(
            lambda: ids <= set(handled),
            120,
            "the backlog",
            lambda: f"{len(ids & set(handled))} of {len(ids)}",
        )
        took = time.monotonic() - t0
    finally:
        await both.stop()
    print(f"\nrocketmq cluster: a backlog of {BACKLOG} on {full} drained in {took:.1f}s")
    # One batch per empty 5 s long poll on the other broker would take 100 s or more.
    assert took < 60.0, f"the backlog of one broker took {took:.1f}s to drain"
