"""kombu+redis:// fault tests on a real redis-server: a worker killed with SIGKILL loses
nothing (kombu gives its unacked messages back after ``visibility_timeout``; the adapter takes
a message and records it as unacked in one step, redis_channel.py), and messages published,
delayed or in flight survive a server restart (AOF, ``appendfsync always``)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from unimq import Broker, Message
from unimq.testing.conformance import Collector
from unimq.testing.conformance.cases_delivery import publish_many

pytest.importorskip("kombu")


from . import kombu_servers

kombu_redis_server = kombu_servers.kombu_redis_server

WORKER = Path(__file__).parent.parent / "testcontainers" / "tests" / "fault_worker.py"
VISIBILITY = 3  # seconds before Redis gives a dead worker's unacked messages back


def unique(name: str) -> str:
    return f"fault.{uuid.uuid4().hex[:8]}.{name}"


async def test_worker_killed_with_sigkill_another_finishes(
    kombu_redis_server: Any, tmp_path: Path
) -> None:
    topic, group = unique("sigkill"), "fault-sigkill"
    out = tmp_path / "handled.txt"
    out.touch()
    url = f"{kombu_redis_server.url}?visibility_timeout={VISIBILITY}"

    def start_worker() -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, str(WORKER), url, topic, group, str(out)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        return process

    first = start_worker()
    try:
        async with Broker(kombu_redis_server.url) as producer:
            ids = await publish_many(producer, topic, [b"x"] * 2000)
        deadline = time.monotonic() + 60
        while len(out.read_text().splitlines()) < 200 and time.monotonic() < deadline:  # noqa: ASYNC110 - a file another process writes
            await asyncio.sleep(0.05)
        first.kill()  # SIGKILL: its unacked messages wait in kombu's unacked hash
        first.wait(10)
        killed_after = len(out.read_text().splitlines())
        assert killed_after < 2000, "the first worker finished before it could be killed"
        second = start_worker()
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                seen = {line.split()[0] for line in out.read_text().splitlines() if line}
                if set(ids) <= seen:
                    break
                await asyncio.sleep(0.2)
        finally:
            second.terminate()
            second.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    seen = {line.split()[0] for line in out.read_text().splitlines() if line}
    lost = set(ids) - seen
    assert not lost, (
        f"{len(lost)} messages lost after SIGKILL; on the server: "
        f"{redis_state(kombu_redis_server, topic, group)}"
    )


# A worker that dies the moment kombu hands it a message: after the message left the queue,
# before anything else ran. kombu's own Redis consumer records the message as unacked only
# after this point (so it was lost); the adapter's take recorded it before (so it comes back).
DIES_ON_DELIVERY = """
import asyncio, os, signal, sys
from kombu.transport.virtual.base import Transport
from unimq import Broker, Message

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

Transport._deliver = die

async def main(url, topic, group):
    broker = Broker(url)

    @broker.subscriber(topic, group=group)
    async def handle(message: Message) -> None:
        print("handled", flush=True)  # never: it dies first

    async with broker:
        await asyncio.Event().wait()

asyncio.run(main(*sys.argv[1:4]))
"""


async def test_worker_killed_between_pop_and_unacked_record_loses_nothing(
    kombu_redis_server: Any,
) -> None:
    topic, group = unique("taken"), "fault-taken"
    url = f"{kombu_redis_server.url}?visibility_timeout=1"  # the restorer's timeout counts
    got = Collector(time_scale=2)
    consumer = Broker(url)

    @consumer.subscriber(topic, group=group)
    async def handle(message: Message) -> None:
        got.add(message.body)

    async with consumer:  # declares the group queue
        pass
    async with Broker(url) as producer:
        await publish_many(producer, topic, [b"m-%d" % i for i in range(3)])
    dying = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DIES_ON_DELIVERY, url, topic, group,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        stdout, _ = await asyncio.wait_for(dying.communicate(), 60)
    finally:
        if dying.returncode is None:
            dying.kill()
    assert dying.returncode == -9, f"the worker should have died on delivery: {stdout!r}"
    async with consumer:
        await got.wait_for(3, timeout=30)  # restored after 1 s (plus kombu's lock: 10 s)
    assert sorted(set(got.items)) == [b"m-0", b"m-1", b"m-2"], (
        f"on the server: {redis_state(kombu_redis_server, topic, group)}"
    )


def redis_state(server: Any, topic: str, group: str) -> str:
    """What Redis still holds, to tell a lost message from a slow one."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=server.port, password=server.password)
    try:
        queue = f"{topic}::{group}"
        return (
            f"{client.llen(queue)} ready in {queue!r}, {client.hlen('unacked')} unacked, "
            f"{client.zcard('unimq.delayed')} delayed"
        )
    finally:
        client.close()


async def test_published_and_delayed_messages_survive_a_server_restart(
    kombu_redis_server: Any,
) -> None:
    topic, group = unique("restart"), "fault-restart"
    got = Collector(time_scale=2)
    consumer = Broker(kombu_redis_server.url)

    @consumer.subscriber(topic, group=group)
    async def handle(message: Message) -> None:
        got.add(message.body)

    async with consumer:  # declares the group queue, then stop consuming before publishing
        pass
    async with Broker(kombu_redis_server.url) as producer:
        await publish_many(producer, topic, [b"now-%d" % i for i in range(200)])
        await producer.publish(topic, b"later", delay=3)
    await asyncio.to_thread(kombu_redis_server.restart)
    async with consumer:
        await got.wait_for(201, timeout=30)
    assert b"later" in got.items
    assert len(set(got.items)) == 201


async def test_a_take_pops_no_more_than_the_prefetch_window(kombu_redis_server: Any) -> None:
    """The take pops a whole window per round trip (redis_channel.py), never more: with every
    handler busy, the server holds exactly ``prefetch`` messages as unacked, the rest ready."""
    import redis

    topic, group = unique("window"), "fault-window"
    started, release = asyncio.Event(), asyncio.Event()
    busy = 0
    consumer = Broker(kombu_redis_server.url)

    @consumer.subscriber(topic, group=group, concurrency=3, dead_letter=False)
    async def handle(message: Message) -> None:
        nonlocal busy
        busy += 1
        if busy == 3:
            started.set()
        await release.wait()

    async with consumer:  # declares the group queue
        pass
    async with Broker(kombu_redis_server.url) as producer:
        await publish_many(producer, topic, [b"w-%d" % i for i in range(20)])
    client = redis.Redis(host="127.0.0.1", port=kombu_redis_server.port,
                         password=kombu_redis_server.password)  # fmt: skip
    try:
        async with consumer:
            await asyncio.wait_for(started.wait(), 30)
            await asyncio.sleep(0.5)  # time for a take that would overrun the window
            queue = f"{topic}::{group}"
            # kombu's unacked entry: [message, exchange, routing key (the queue, see routing.py)]
            unacked = sum(1 for value in client.hvals("unacked") if json.loads(value)[2] == queue)
            ready = client.llen(queue)
            release.set()
        assert (unacked, ready, busy) == (3, 17, 3)
    finally:
        client.close()


async def test_a_full_window_does_not_wait_for_the_poll_interval(
    kombu_redis_server: Any,
) -> None:
    """A consumer whose prefetch window is full waits for the acks that reopen it, not for
    ``poll_interval``: it slept the whole interval once per window (60 messages, a window of
    2 and poll_interval=0.5 took 15 s; now well under one second)."""
    topic, group = unique("fullwindow"), "fault-fullwindow"
    got = Collector()
    declaring = Broker(kombu_redis_server.url)  # the default poll_interval: it stops at once
    consumer = Broker(f"{kombu_redis_server.url}?poll_interval=0.5")
    for broker in (declaring, consumer):

        @broker.subscriber(topic, group=group, concurrency=2, dead_letter=False)
        async def handle(message: Message) -> None:
            got.add(message.body)

    async with declaring:  # declares the group queue
        pass
    async with Broker(kombu_redis_server.url) as producer:
        await publish_many(producer, topic, [b"f-%d" % i for i in range(60)])
    async with consumer:
        started = time.monotonic()
        await got.wait_for(60, timeout=30)
        elapsed = time.monotonic() - started
    assert elapsed < 5, f"60 messages took {elapsed:.1f} s"
