"""kombu+redis:// transport behaviour on a real redis-server, below the conformance suite:
routing between groups, requeue, secrets in error texts, options."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pytest

from unimq import Broker
from unimq.clock import SystemClock
from unimq.errors import AuthenticationError, ConfigurationError, ConnectionFailedError
from unimq.transport import OutgoingMessage, SubscriptionSpec, TransportContext
from unimq.url import BrokerURL

pytest.importorskip("kombu")


from . import kombu_servers

kombu_redis_server = kombu_servers.kombu_redis_server


def transport(url: str, **options: Any) -> Any:
    from unimq_kombu.transport import KombuTransport

    return KombuTransport(BrokerURL.parse(url), options, TransportContext(SystemClock(), "t"))


def message(topic: str, body: bytes) -> OutgoingMessage:
    return OutgoingMessage(topic=topic, body=body, headers={"unimq-id": uuid.uuid4().hex})


async def test_requeued_delivery_goes_back_to_its_own_group_only(kombu_redis_server: Any) -> None:
    """kombu restores a requeued message through the exchange it was published to: sent
    through the topic's exchange, it would be copied into every other group's queue too."""
    topic = f"t.{uuid.uuid4().hex[:8]}"
    t = transport(kombu_redis_server.url)
    await t.connect()
    try:
        a = await t.subscribe(SubscriptionSpec(topic, "a", prefetch=4))
        b = await t.subscribe(SubscriptionSpec(topic, "b", prefetch=4))
        await t.publish(message(topic, b"one"))
        first_a = await asyncio.wait_for(a.receive(), 10)
        first_b = await asyncio.wait_for(b.receive(), 10)
        await first_b.ack()
        await a.close()  # hands the unacked delivery back to group a
        extra = None
        try:
            extra = await asyncio.wait_for(b.receive(), 1.5)
        except asyncio.TimeoutError:
            pass
        assert extra is None, "group b got a copy of group a's requeued message"
        a2 = await t.subscribe(SubscriptionSpec(topic, "a", prefetch=4))
        again = await asyncio.wait_for(a2.receive(), 10)
        assert again.body == first_a.body == b"one"
        await again.ack()
    finally:
        await t.close()


async def test_published_before_any_group_is_kept_for_the_first(kombu_redis_server: Any) -> None:
    topic = f"t.{uuid.uuid4().hex[:8]}"
    t = transport(kombu_redis_server.url)
    await t.connect()
    try:
        await t.publish(message(topic, b"early"))
        sub = await t.subscribe(SubscriptionSpec(topic, "late", prefetch=1))
        got = await asyncio.wait_for(sub.receive(), 10)
        assert got.body == b"early"
        await got.ack()
    finally:
        await t.close()


async def test_refused_password_is_typed_and_never_shown(kombu_redis_server: Any) -> None:
    secret = "n0t-the-Passw0rd"
    broker = Broker(f"kombu+redis://:{secret}@127.0.0.1:{kombu_redis_server.port}/0")
    with pytest.raises(AuthenticationError) as caught:
        await broker.connect()
    assert secret not in str(caught.value) and secret not in repr(caught.value)
    assert caught.value.__cause__ is None or secret not in str(caught.value.__cause__)


async def test_unreachable_server_is_typed_and_never_shows_the_password() -> None:
    port = kombu_servers.servers.free_port()
    secret = "s3cret-unreach"
    t = transport(f"kombu+redis://:{secret}@127.0.0.1:{port}/0")
    with pytest.raises(ConnectionFailedError) as caught:
        await t.connect()
    assert secret not in str(caught.value)


def _publishing_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("unimq-kombu-publish")]


async def test_a_failed_connect_leaves_no_publishing_connection_open() -> None:
    """The publishing connections open side by side; when they fail, none stays open."""
    before = _publishing_threads()
    port = kombu_servers.servers.free_port()
    t = transport(f"kombu+redis://127.0.0.1:{port}/0", publish_connections=3)
    with pytest.raises(ConnectionFailedError):
        await t.connect()
    await asyncio.sleep(0.1)
    assert _publishing_threads() == before


async def test_a_connect_cancelled_midway_leaves_no_publishing_connection_open() -> None:
    """``connect_timeout`` cancels the connect; what opened meanwhile is closed."""
    before = _publishing_threads()
    import socket

    with socket.socket() as silent:  # accepts TCP connections and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        t = transport(f"kombu+redis://127.0.0.1:{port}/0", publish_connections=3)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(t.connect(), 0.5)
        for _ in range(250):  # each thread ends when its open gives up (socket_timeout)
            if _publishing_threads() == before:
                break
            await asyncio.sleep(0.1)
    assert _publishing_threads() == before


async def test_an_sqs_server_that_never_answers_fails_the_connect_in_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """botocore waits 60 s for a reply by default and retries: a stalled SQS call held a
    connection thread for minutes. The adapter bounds each call (``client-config``)."""
    import socket

    from unimq_kombu import connect

    monkeypatch.setattr(connect, "SQS_READ_MARGIN", 0.5, raising=False)
    with socket.socket() as silent:  # accepts TCP connections and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        t = transport(f"kombu+sqs://k:s@127.0.0.1:{port}", secure=False, publish_connections=1)
        with pytest.raises(ConnectionFailedError):
            await asyncio.wait_for(t.connect(), 20)


def test_bad_options_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="unknown kombu option"):
        transport("kombu+redis://127.0.0.1:1/0", prefetch_multiplier="4")
    with pytest.raises(ConfigurationError, match="visibility_timeout"):
        transport("kombu+redis://127.0.0.1:1/0", visibility_timeout="soon")
    with pytest.raises(ConfigurationError, match="secure"):
        transport("kombu+sqs://k:s@127.0.0.1:1", secure="maybe")


def test_url_query_options_are_read_and_keywords_win() -> None:
    assert (
        transport("kombu+redis://127.0.0.1:1/0?visibility_timeout=7").options.visibility_timeout
        == 7
    )
    given = transport("kombu+redis://127.0.0.1:1/0?visibility_timeout=7", visibility_timeout=9)
    assert given.options.visibility_timeout == 9
    with pytest.raises(ConfigurationError, match="visibility_timeout"):
        transport("kombu+redis://127.0.0.1:1/0?visibility_timeout=soon")


def test_capabilities_per_transport() -> None:
    sqs = transport("kombu+sqs://k:s@127.0.0.1:1").capabilities
    assert sqs.max_delay == 900 and not sqs.ordering and sqs.max_message_size == 128 * 1024
    redis = transport("kombu+redis://127.0.0.1:1/0").capabilities
    assert redis.max_delay is None and not redis.ordering and not redis.durable
