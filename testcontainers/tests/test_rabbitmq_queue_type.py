"""RabbitMQ queue types (``queue_type`` option): what unimq declares, seen by ``rabbitmqctl``,
and the error for a queue that already exists with the other type."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import pytest
from unimq_brokers.fixtures import version_params
from unimq_rabbitmq import queue_types, topology

from unimq import Broker, ConfigurationError, Message

pytestmark = pytest.mark.realbroker


def unique(name: str) -> str:
    return f"qtype.{uuid.uuid4().hex[:8]}.{name}"


async def list_queues(broker: Any, vhost: str = "/") -> dict[str, dict[str, Any]]:
    """``rabbitmqctl list_queues name type arguments`` in the broker's container, by name."""
    code, out, err = await asyncio.to_thread(
        broker.exec,
        [
            "rabbitmqctl", "list_queues", "-q", "-p", vhost,
            "name", "type", "arguments", "--formatter", "json",
        ],
    )  # fmt: skip
    assert code == 0, err
    rows = json.loads(out)
    result: dict[str, dict[str, Any]] = {}
    for row in rows:
        arguments = row["arguments"]
        if isinstance(arguments, list):  # [[key, AMQP type, value], ...]
            arguments = {entry[0]: entry[-1] for entry in arguments}
        result[row["name"]] = {"type": str(row["type"]), "arguments": arguments}
    return result


async def nothing(message: Message) -> None:
    return None


#: On every version: 3.10 is the first with quorum message TTL and at-least-once dead-lettering.
every_version = pytest.mark.parametrize(
    "rabbitmq_broker",
    version_params("rabbitmq", every_version=True),
    indirect=True,
    scope="session",
)


@every_version
async def test_ladder_retry_and_group_queues_are_quorum_with_at_least_once_dead_lettering(
    rabbitmq_broker: Any,
) -> None:
    if not rabbitmq_broker.can_control:
        pytest.skip("external broker: no rabbitmqctl")
    topic = unique("orders")
    broker = Broker(rabbitmq_broker.url)
    broker.subscriber(topic, group="work", ordered=True)(nothing)
    broker.subscriber(topic, group="fanout", broadcast=True)(nothing)
    async with broker:
        queues = await list_queues(rabbitmq_broker)
    for level in range(topology.LEVELS):
        ladder = queues[topology.level_name(level)]
        assert "quorum" in ladder["type"], ladder
        arguments = ladder["arguments"]
        assert arguments["x-dead-letter-strategy"] == "at-least-once", ladder
        assert arguments["x-overflow"] == "reject-publish", ladder
        assert arguments["x-message-ttl"] == 2**level * 1000, ladder
    group = queues[topology.group_queue(topic, "work")]
    assert "quorum" in group["type"], group
    assert group["arguments"]["x-single-active-consumer"] is True
    holding = queues[f"{topic}.work.dlq"]
    assert "quorum" in holding["type"], holding
    broadcast = [name for name in queues if name.startswith(f"{topic}::") and "fanout" in name]
    assert broadcast, queues.keys()
    assert all("classic" in queues[name]["type"] for name in broadcast)


@every_version
async def test_quorum_queues_honour_per_message_ttl_and_dead_letter_at_least_once(
    rabbitmq_broker: Any,
) -> None:
    """What the ladder relies on, with the raw client: a quorum queue expires a message (here by
    its own ``expiration``; the ladder uses the queue's ``x-message-ttl``) and dead-letters it
    at least once, with RabbitMQ's ``x-death`` record."""
    source, target = unique("ttl-source"), unique("ttl-target")
    connection = await aio_pika.connect(rabbitmq_broker.url)
    async with connection:
        channel = await connection.channel()
        received = await channel.declare_queue(
            target, durable=True, arguments={"x-queue-type": "quorum"}
        )
        waiting = await channel.declare_queue(
            source,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": target,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )
        loop = asyncio.get_running_loop()
        sent = loop.time()
        await channel.default_exchange.publish(
            aio_pika.Message(
                b"expires", expiration=1, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
            ),
            routing_key=source,
        )
        message = None
        while message is None and loop.time() - sent < 30:
            message = await received.get(no_ack=False, fail=False)
            if message is None:
                await asyncio.sleep(0.1)
        assert message is not None, "the expired message was not dead-lettered within 30 s"
        waited = loop.time() - sent
        assert message.body == b"expires"
        assert waited >= 0.9, f"dead-lettered after {waited:.2f}s, before its 1 s TTL"
        death = message.headers["x-death"]
        assert isinstance(death, list) and death[0]["reason"] == "expired", death
        await message.ack()
        await waiting.delete(if_unused=False, if_empty=False)
        await received.delete(if_unused=False, if_empty=False)


@every_version
async def test_a_message_returned_25_times_stays_in_a_quorum_queue(rabbitmq_broker: Any) -> None:
    """RabbitMQ 4.0 drops a quorum queue's message after 20 returns by default, and a closed
    channel's return counts: without unimq's ``x-delivery-limit`` the 21st ``basic.get`` (one
    ``unimq dlq list`` each, say) finds the dead letter gone."""
    name = unique("returns")
    connection = await aio_pika.connect(rabbitmq_broker.url)
    async with connection:
        channel = await connection.channel()
        arguments = queue_types.base_arguments("quorum")
        queue = await channel.declare_queue(name, durable=True, arguments=arguments)
        await channel.default_exchange.publish(
            aio_pika.Message(b"kept", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=name,
        )
        for returns in range(25):
            session = await connection.channel(publisher_confirms=False)
            held = await (await session.declare_queue(name, passive=True)).get(
                no_ack=False, fail=False, timeout=10
            )
            assert held is not None, f"dropped after {returns} returns"
            await session.close()  # returns it, as a dead-letter session does
        await queue.delete(if_unused=False, if_empty=False)


@asynccontextmanager
async def own_vhost(broker: Any) -> AsyncIterator[str]:
    """A vhost of the test's own, so its classic queues leave the shared quorum ladder alone;
    yields its URL."""
    vhost = f"qtype-{uuid.uuid4().hex[:8]}"
    await ctl(broker, "add_vhost", vhost)
    try:
        await ctl(broker, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield broker.url.rstrip("/") + "/" + vhost
    finally:
        await ctl(broker, "delete_vhost", vhost)


async def ctl(broker: Any, *args: str) -> None:
    code, _, err = await asyncio.to_thread(broker.exec, ["rabbitmqctl", *args])
    assert code == 0, err


async def declare_classic(url: str, name: str, arguments: dict[str, Any] | None = None) -> None:
    """``name`` as unimq declared it before ``queue_type``: durable, no ``x-queue-type``."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(name, durable=True, arguments=arguments)


async def test_an_existing_classic_group_queue_is_a_configuration_error(
    rabbitmq_broker: Any,
) -> None:
    """A classic group queue beside the shared vhost's quorum ladder."""
    topic, group = unique("classic"), "legacy"
    name = topology.group_queue(topic, group)
    await declare_classic(rabbitmq_broker.url, name)
    try:
        broker = Broker(rabbitmq_broker.url)
        broker.subscriber(topic, group=group)(nothing)
        with pytest.raises(ConfigurationError) as caught:
            async with broker:
                pass
        text = str(caught.value)
        assert f"queue {name!r} already exists as a classic queue" in text
        assert "queue_type='classic'" in text and f"rabbitmqctl delete_queue {name}" in text
    finally:
        connection = await aio_pika.connect(rabbitmq_broker.url)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(name)


async def test_an_earlier_classic_topology_is_a_configuration_error_and_classic_opts_out(
    rabbitmq_broker: Any,
) -> None:
    """The upgrade: classic queues as unimq declared them before ``queue_type`` (no
    ``x-queue-type``). The default stops at the first ladder queue, before declaring anything
    (RabbitMQ first objects to ``x-overflow`` there, yet the error names the type);
    ``queue_type='classic'`` uses them as they are, delays included."""
    if not rabbitmq_broker.can_control:
        pytest.skip("external broker: no rabbitmqctl")
    topic, group = unique("upgrade"), "legacy"
    async with own_vhost(rabbitmq_broker) as url:
        vhost = url.rsplit("/", 1)[1]
        for level in range(topology.LEVELS):
            downstream = topology.level_name(level - 1) if level else topology.DELIVER_EXCHANGE
            ladder = {"x-message-ttl": 2**level * 1000, "x-dead-letter-exchange": downstream}
            await declare_classic(url, topology.level_name(level), ladder)
        await declare_classic(url, topology.group_queue(topic, group))
        broker = Broker(url)
        broker.subscriber(topic, group=group)(nothing)
        with pytest.raises(
            ConfigurationError, match=r"'unimq\.delay\.L0' already exists as a classic queue"
        ):
            async with broker:
                pass
        queues = await list_queues(rabbitmq_broker, vhost)
        assert all("classic" in q["type"] for q in queues.values()), queues

        received: asyncio.Queue[bytes] = asyncio.Queue()

        async def handle(message: Message) -> None:
            received.put_nowait(message.body)

        classic = Broker(url, queue_type="classic")
        classic.subscriber(topic, group=group)(handle)
        async with classic:
            await classic.publish(topic, b"still classic")
            assert await asyncio.wait_for(received.get(), 30) == b"still classic"
            await classic.publish(topic, b"delayed", delay=1)
            assert await asyncio.wait_for(received.get(), 30) == b"delayed"
        queues = await list_queues(rabbitmq_broker, vhost)
        assert all("classic" in q["type"] for q in queues.values()), queues
