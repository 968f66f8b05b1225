"""RocketMQ 5 with security on (ACL 2.0 access/secret keys, TLS on the proxy's gRPC port):
what a refused client sees.

Every bad case runs against the real secured broker (``rocketmq_secure_broker``) and asserts
the error type, that it came within the connect timeout, what the message names, and that no
secret key appears in any string produced (``str``, ``repr``, the formatted traceback, the
captured log records at DEBUG, stdout and stderr).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from unimq_brokers.secure_rocketmq import ALLOWED_TOPIC, DENIED_TOPIC
from unimq_brokers.security_checks import check, publish, refused

import unimq
from unimq.testing.conformance import Backend, ConformanceSuite

pytest.importorskip("rocketmq")

pytestmark = pytest.mark.realbroker


def _check(*args: Any, **kwargs: Any) -> None:
    check("rocketmq", *args, **kwargs)


@pytest.fixture
def secure(rocketmq_secure_broker):  # type: ignore[no-untyped-def]
    return rocketmq_secure_broker


@pytest.fixture
def secrets(secure) -> list[str]:  # type: ignore[no-untyped-def]
    return [secure.app_secret, secure.admin_secret]


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


async def test_wrong_secret_key_is_an_authentication_error(secure, secrets, caplog, capfd):  # type: ignore[no-untyped-def]
    wrong = "not-the-" + secure.app_secret[:6] + "-secret"
    exc, seconds = await refused(
        secure.url.replace(secure.app_secret, wrong), publish(ALLOWED_TOPIC)
    )
    _check(
        "wrong secret key",
        exc,
        seconds,
        unimq.AuthenticationError,
        ["refused", "'app'", "check signature failed"],
        [*secrets, wrong],
        caplog,
        capfd,
    )


async def test_unknown_access_key_is_an_authentication_error(secure, secrets, caplog, capfd):  # type: ignore[no-untyped-def]
    url = secure.url.replace(f"app:{secure.app_secret}@", "nobody:some-secret-key@")
    exc, seconds = await refused(url, publish(ALLOWED_TOPIC))
    _check(
        "unknown access key",
        exc,
        seconds,
        unimq.AuthenticationError,
        ["'nobody'", "not found"],
        [*secrets, "some-secret-key"],
        caplog,
        capfd,
    )


async def test_publish_to_a_topic_the_user_may_not_use(secure, secrets, caplog, capfd):  # type: ignore[no-untyped-def]
    exc, seconds = await refused(secure.url, publish(DENIED_TOPIC))
    _check(
        "publish, no permission on the topic",
        exc,
        seconds,
        unimq.AuthorizationError,
        [repr(DENIED_TOPIC), "'app'", "may not publish"],
        secrets,
        caplog,
        capfd,
    )


async def test_subscribe_as_a_group_the_user_may_not_use(secure, secrets, caplog, capfd):  # type: ignore[no-untyped-def]
    group = f"denied.g.{uuid.uuid4().hex[:6]}"
    exc, seconds = await refused(secure.url, None, subscribe=(ALLOWED_TOPIC, group))
    _check(
        "subscribe, no permission on the group",
        exc,
        seconds,
        unimq.AuthorizationError,
        [repr(group), "'app'", "may not read"],
        secrets,
        caplog,
        capfd,
    )


async def test_untrusted_certificate(secure, secrets, caplog, capfd):  # type: ignore[no-untyped-def]
    url = secure.url.replace(str(secure.tls.ca_cert), str(secure.tls.other_ca_cert))
    exc, seconds = await refused(url, publish(ALLOWED_TOPIC))
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
    exc, seconds = await refused(url, publish(ALLOWED_TOPIC))
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
    url = secure.url.split("?")[0]
    exc, seconds = await refused(url, publish(ALLOWED_TOPIC))
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


async def test_tls_client_on_a_default_proxy_port(secure, rocketmq_broker, secrets, caplog, capfd):  # type: ignore[no-untyped-def]
    # A proxy with default settings is "permissive": it answers TLS too, with a self-signed
    # test certificate. So a TLS client there is refused for the certificate, never silently
    # accepted, and no plaintext-port case exists on a default RocketMQ proxy.
    url = secure.url.replace(f":{secure.port}?", f":{rocketmq_broker.port}?")
    exc, seconds = await refused(url, publish(ALLOWED_TOPIC))
    _check(
        "TLS client on the default (permissive) proxy port",
        exc,
        seconds,
        unimq.TLSError,
        ["untrusted certificate"],
        secrets,
        caplog,
        capfd,
    )


class TestRocketMQSecureSmoke(ConformanceSuite):
    """Publish, consume, retry and dead-letter over TLS as the limited access key, in one case:
    the handler fails every attempt, so the message is consumed, retried and dead-lettered.
    One case only: every topic and group it needs is created by a JVM-per-call mqadmin (5-10 s
    each under load), which the CI time budget bounds."""

    only_cases = frozenset({"test_exhausted_retries_dead_letter_with_diagnostics"})

    @pytest.fixture
    def backend(self, rocketmq_secure_broker):  # type: ignore[no-untyped-def]
        return Backend(
            url=rocketmq_secure_broker.url,
            name="rocketmq-secure",
            time_scale=3.0,
            options={"provisioner": rocketmq_secure_broker.provisioner()},
        )
