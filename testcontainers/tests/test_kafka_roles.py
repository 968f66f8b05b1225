"""Kafka on a real broker: the transport knows a retry topic by ``SubscriptionSpec.role``.

A broadcast subscriber's retry topic is this instance's own and is deleted when it stops. A
subscriber's *main* topic may happen to be named like a retry topic
(``<something>.<group>.retry``); guessed from the name, it would be deleted too, losing every
message on it.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from unimq import Broker, Message

ck = pytest.importorskip("confluent_kafka")
from confluent_kafka.admin import AdminClient  # noqa: E402

pytestmark = [pytest.mark.realbroker, pytest.mark.asyncio]


def _topics(bootstrap: str) -> set[str]:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    return set(admin.list_topics(timeout=30).topics)


async def test_a_main_topic_named_like_a_retry_topic_is_not_deleted(kafka_broker: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    group, instance = f"roles-{tag}", "i1"
    # The broadcast group is "<group>.<instance>": this main topic ends like its retry topic.
    topic = f"roles.{tag}.{group}.{instance}.retry"
    broker = Broker(kafka_broker.url, instance_id=instance)
    got: list[bytes] = []

    @broker.subscriber(topic, group=group, broadcast=True)
    async def handle(message: Message) -> None:
        got.append(message.body)

    async with broker:
        pass
    topics = await asyncio.to_thread(_topics, kafka_broker.bootstrap_servers)
    assert topic in topics, "the subscriber's own (main) topic was deleted when it stopped"
    retry = f"{topic}.{group}.{instance}.retry"
    assert retry not in topics, "the broadcast instance's retry topic should be deleted"
