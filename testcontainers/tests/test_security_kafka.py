"""Kafka with security on (SASL_SSL, SCRAM-SHA-512, ACLs): what a refused client sees.

Every bad case runs against the real secured broker (``kafka_secure_broker``) and asserts the
error type, that it came within the connect timeout (never a hang), what the message names,
that no secret appears in any string produced (``str``, ``repr``, the formatted traceback, the
captured log records at DEBUG, stdout and stderr), and that librdkafka printed nothing on
stderr for an error unimq reports itself. The conformance smoke subset (publish, consume,
retry, dead-letter) runs over the same SASL_SSL connection at the end.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest
from unimq_brokers.security_checks import CONNECT_TIMEOUT, Action, check, publish, refused

import unimq
from unimq import Broker
from unimq.testing.conformance import Backend, ConformanceSuite

pytestmark = pytest.mark.realbroker


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


async def _publish(topic: str) -> Action:
    return publish(topic)


def _check(*args: Any, **kwargs: Any) -> None:
    check("kafka", *args, stderr_marks=("rdkafka", "%3|", "%4|"), **kwargs)


_refused = refused


@pytest.fixture
def secure(kafka_secure_broker):  # type: ignore[no-untyped-def]
    return kafka_secure_broker


@pytest.fixture
def secrets(secure) -> list[str]:  # type: ignore[no-untyped-def]
    return [secure.app_password, secure.admin_password]


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


async def test_round_trip_over_sasl_ssl(secure) -> None:  # type: ignore[no-untyped-def]
    topic, got = _name("sec.rt."), asyncio.Event()
    broker = Broker(secure.url, connect_timeout=CONNECT_TIMEOUT)

    @broker.subscriber(topic, group=_name("sec.g."))
    async def handler(body: str) -> None:
        got.set()

    async with broker:
        await broker.publish(topic, "hello")
        await asyncio.wait_for(got.wait(), 30)


async def test_wrong_password_is_an_authentication_error(secure, secrets, caplog, capfd):  # type: ignore[no-untyped-def]
    wrong = "not-the-" + secure.app_password[:6] + "-password"
    url = secure.url.replace(secure.app_password, wrong)
    exc, seconds = await _refused(url, await _publish(_name("sec.t.")))
    _check(
        "wrong password",
        exc,
        seconds,
        unimq.AuthenticationError,
        ["refused the credentials", "SCRAM-SHA-512"],
        [*secrets, wrong],
        caplog,
        capfd,
    )


async def test_publish_to_a_topic_the_user_may_not_create(secure, secrets, caplog, capfd):  # type: ignore[no-untyped-def]
    topic = _name("denied.t.")
    exc, seconds = await _refused(secure.url, await _publish(topic))
    _check(
        "publish, no permission on the topic",
        exc,
        seconds,
        unimq.AuthorizationError,
        [repr(topic), "'app'", "may not create"],
        secrets,
        caplog,
        capfd,
    )


async def test_publish_to_a_read_only_topic(secure, secrets, caplog, capfd):  # type: ignore[no-untyped-def]
    from unimq_brokers.secure_kafka import READ_ONLY_TOPIC

    exc, seconds = await _refused(secure.url, await _publish(READ_ONLY_TOPIC))
    _check(
        "publish, topic readable but not writable",
        exc,
        seconds,
        unimq.AuthorizationError,
        [repr(READ_ONLY_TOPIC), "'app'", "may not publish"],
        secrets,
        caplog,
        capfd,
    )


async def test_subscribe_as_a_group_the_user_may_not_read(secure, secrets, caplog, capfd):  # type: ignore[no-untyped-def]
    group = _name("denied.g.")
    exc, seconds = await _refused(secure.url, None, subscribe=(_name("sec.t."), group))
    _check(
        "subscribe, no permission on the group",
        exc,
        seconds,
        unimq.AuthorizationError,
        [repr(group), "'app'", "consumer group"],
        secrets,
        caplog,
        capfd,
    )


async def test_untrusted_certificate(secure, secrets, caplog, capfd):  # type: ignore[no-untyped-def]
    url = secure.url.replace(str(secure.tls.ca_cert), str(secure.tls.other_ca_cert))
    exc, seconds = await _refused(url, await _publish(_name("sec.t.")))
    _check(
        "untrusted certificate",
        exc,
        seconds,
        unimq.TLSError,
        ["untrusted certificate", str(secure.tls.other_ca_cert)],
        secrets,
        caplog,
        capfd,
    )


async def test_certificate_for_another_host_name(secure, secrets, caplog, capfd):  # type: ignore[no-untyped-def]
    url = secure.url.replace("@127.0.0.1:", "@localhost:")
    exc, seconds = await _refused(url, await _publish(_name("sec.t.")))
    _check(
        "wrong host name",
        exc,
        seconds,
        unimq.TLSError,
        ["wrong host name", "'localhost'"],
        secrets,
        caplog,
        capfd,
    )


async def test_plaintext_client_on_the_tls_port(secure, secrets, caplog, capfd):  # type: ignore[no-untyped-def]
    url = f"kafka://{secure.host}:{secure.port}"
    exc, seconds = await _refused(url, await _publish(_name("sec.t.")))
    _check(
        "plaintext client on the TLS port",
        exc,
        seconds,
        unimq.TLSError,
        ["plaintext client on a TLS port"],
        secrets,
        caplog,
        capfd,
    )


async def test_tls_client_on_a_plaintext_port(secure, kafka_broker, secrets, caplog, capfd):  # type: ignore[no-untyped-def]
    url = secure.url.replace(f":{secure.port}?", f":{kafka_broker.port}?")
    exc, seconds = await _refused(url, await _publish(_name("sec.t.")))
    _check(
        "TLS client on a plaintext port",
        exc,
        seconds,
        unimq.TLSError,
        ["TLS client on a plaintext port"],
        secrets,
        caplog,
        capfd,
    )


async def test_verification_off_connects_and_warns_once(secure, caplog):  # type: ignore[no-untyped-def]
    # The CA given is unrelated, so only a client that does not verify gets through.
    url = secure.url.replace(str(secure.tls.ca_cert), str(secure.tls.other_ca_cert))
    url = url.replace("@127.0.0.1:", "@localhost:") + "&ssl_verify=false"
    for _ in range(2):
        async with Broker(url, connect_timeout=CONNECT_TIMEOUT) as broker:
            await broker.publish(_name("sec.noverify."), b"x")
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "turned off" in r.message
    ]
    assert len(warnings) == 1, [r.message for r in warnings]
    assert "certificate verification and host name check" in warnings[0].message
    assert secure.app_password not in caplog.text


class TestKafkaSecureSmoke(ConformanceSuite):
    """Publish, consume, retry and dead-letter over SASL_SSL as the limited user."""

    only_cases = frozenset(
        {
            "test_publish_receipt_id_reaches_the_handler",
            "test_key_and_headers_round_trip",
            "test_retry_until_success_keeps_id_and_counts_attempts",
            "test_exhausted_retries_dead_letter_with_diagnostics",
            "test_dead_letter_can_be_replayed",
        }
    )

    @pytest.fixture
    def backend(self, kafka_secure_broker):  # type: ignore[no-untyped-def]
        return Backend(url=kafka_secure_broker.url, name="kafka-secure", time_scale=2.0)
