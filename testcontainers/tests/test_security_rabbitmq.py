"""Security on a real RabbitMQ: TLS, passwords, client certificates (EXTERNAL), permissions.

Every refused case runs against the secured broker (``rabbitmq_secure_broker``,
testcontainers/unimq_brokers/rabbitmq_secure.py) and asserts four things: the unimq error type,
a message that says what went wrong, that it came within the connect timeout (never a hang),
and that no secret (passwords, the key passphrase) is in any text produced: ``str``, ``repr``,
the formatted traceback, every log record captured (DEBUG included) and what reached
stdout/stderr. aio-pika and aiormq must log nothing at WARNING or above for an error that unimq
raises itself. docs/security.md has the table of these cases.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from unimq_brokers import versions

from unimq import Broker, Message
from unimq.errors import (
    AuthenticationError,
    AuthorizationError,
    ConfigurationError,
    InvalidURLError,
    TLSError,
    UnimqError,
)
from unimq.testing.conformance import Backend, ConformanceSuite

pytestmark = pytest.mark.realbroker

#: The connect timeout of every attempt here: a refusal must come well within it.
CONNECT_TIMEOUT = 5.0
THIRD_PARTY = ("aio_pika", "aiormq", "pamqp")


@dataclass
class Outcome:
    error: BaseException | None
    seconds: float
    texts: str  # everything the attempt produced that a user or a log could see


@pytest.fixture
def capture(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> Iterator[tuple[pytest.LogCaptureFixture, pytest.CaptureFixture[str]]]:
    caplog.set_level(logging.DEBUG)
    yield caplog, capfd


def error_texts(error: BaseException) -> str:
    return "\n".join(
        [
            str(error),
            repr(error),
            "".join(traceback.format_exception(error)),
            *map(repr, error.args),
        ]
    )


async def attempt(
    capture: tuple[pytest.LogCaptureFixture, pytest.CaptureFixture[str]], url: str, **options: Any
) -> Outcome:
    """Connect (and disconnect) once; what happened and every text it produced."""
    caplog, capfd = capture
    caplog.clear()
    t0 = time.monotonic()
    error: BaseException | None = None
    try:
        broker = Broker(url, connect_timeout=CONNECT_TIMEOUT, **options)
        async with broker:
            pass
    except Exception as exc:
        error = exc
    seconds = time.monotonic() - t0
    out, err = capfd.readouterr()
    texts = [caplog.text, out, err, *(repr(r.args) for r in caplog.records)]
    if error is not None:
        texts.append(error_texts(error))
    loud = [
        r
        for r in caplog.records
        if r.name.split(".")[0] in THIRD_PARTY and r.levelno >= logging.WARNING
    ]
    assert not loud or error is None, f"third-party log lines for a unimq error: {loud}"
    return Outcome(error, seconds, "\n".join(texts))


def secrets_of(broker: Any) -> list[str]:
    return [*broker.passwords.values(), broker.certs.key_password]


def assert_no_secret(outcome: Outcome, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in outcome.texts, f"a secret leaked:\n{outcome.texts}"


def ca(broker: Any) -> dict[str, Any]:
    return {"ca_file": str(broker.certs.ca_file)}


def cert(broker: Any, *, encrypted: bool = True, password: str | None = "") -> dict[str, Any]:
    files = broker.certs
    options: dict[str, Any] = {
        **ca(broker),
        "auth_mechanism": "external",
        "cert_file": str(files.client_cert),
        "key_file": str(files.client_key_encrypted if encrypted else files.client_key),
    }
    if encrypted and password is not None:
        options["key_password"] = password or files.key_password
    return options


def bad_cases(b: Any) -> dict[str, tuple[str, dict[str, Any], type[UnimqError], str]]:
    """case -> (url, options, expected error type, words the message must contain)."""
    tls, plain = b.tls_port, b.plain_port
    return {
        "wrong password": (
            b.amqp_url_for("app", "not-" + b.passwords["app"]),
            ca(b),
            AuthenticationError,
            "refused the credentials",
        ),
        "wrong password, plaintext port": (
            b.amqp_url_for("scoped", "not-" + b.passwords["scoped"], tls=False),
            {},
            AuthenticationError,
            "refused the credentials",
        ),
        "unknown vhost": (
            b.amqp_url_for("app", vhost="no-such-vhost"),
            ca(b),
            AuthorizationError,
            "has no virtual host 'no-such-vhost'",
        ),
        "vhost not permitted": (
            b.amqp_url_for("scoped", vhost="unimq-other"),
            ca(b),
            AuthorizationError,
            "refused virtual host 'unimq-other' to user 'scoped'",
        ),
        "untrusted certificate (system store)": (b.url, {}, TLSError, "is not trusted"),
        "untrusted certificate (other CA)": (
            b.url,
            {"ca_file": str(b.certs.other_ca_file)},
            TLSError,
            "is not trusted",
        ),
        "wrong host name": (
            b.amqp_url_for("app", host="127.0.0.1"),
            ca(b),
            TLSError,
            "not valid for host '127.0.0.1'",
        ),
        "plaintext client on the TLS port": (
            b.amqp_url_for("app", tls=False, port=tls),
            {},
            TLSError,
            f"speaks TLS on port {tls}",
        ),
        "TLS client on the plaintext port": (
            b.amqp_url_for("app", tls=True, port=plain),
            ca(b),
            TLSError,
            "answered in plaintext",
        ),
        "wrong key passphrase": (
            b.amqp_url_for(None),
            {**cert(b), "key_password": "not-" + b.certs.key_password},
            ConfigurationError,
            "wrong key_password",
        ),
        "encrypted key without passphrase": (
            b.amqp_url_for(None),
            cert(b, password=None),
            ConfigurationError,
            "is encrypted: set key_password",
        ),
    }


CASES = [
    "wrong password",
    "wrong password, plaintext port",
    "unknown vhost",
    "vhost not permitted",
    "untrusted certificate (system store)",
    "untrusted certificate (other CA)",
    "wrong host name",
    "plaintext client on the TLS port",
    "TLS client on the plaintext port",
    "wrong key passphrase",
    "encrypted key without passphrase",
]


@pytest.mark.parametrize("case", CASES)
async def test_refused_connect_is_typed_prompt_and_masked(
    rabbitmq_secure_broker: Any, capture: Any, case: str
) -> None:
    url, options, expected, words = bad_cases(rabbitmq_secure_broker)[case]
    outcome = await attempt(capture, url, **options)
    assert isinstance(outcome.error, expected), outcome.texts
    assert words in str(outcome.error)
    assert outcome.seconds < CONNECT_TIMEOUT, f"{case} took {outcome.seconds:.1f}s"
    assert_no_secret(outcome, secrets_of(rabbitmq_secure_broker))
    print(
        f"\n| {case} | {type(outcome.error).__name__} | {outcome.error} | {outcome.seconds:.2f}s |"
    )


async def round_trip(url: str, **options: Any) -> None:
    topic, group = f"sec.{uuid.uuid4().hex[:8]}", "g"
    got: asyncio.Queue[Message] = asyncio.Queue()
    broker = Broker(url, connect_timeout=CONNECT_TIMEOUT, **options)

    @broker.subscriber(topic, group=group)
    async def handle(message: Message) -> None:
        await got.put(message)

    async with broker:
        receipt = await broker.publish(topic, b"over TLS")
        message = await asyncio.wait_for(got.get(), 10)
    assert message.id == receipt.message_id and message.body == b"over TLS"


async def test_client_certificate_with_external_and_an_encrypted_key(
    rabbitmq_secure_broker: Any, capture: Any
) -> None:
    await round_trip(rabbitmq_secure_broker.amqp_url_for(None), **cert(rabbitmq_secure_broker))
    caplog, capfd = capture
    texts = caplog.text + "".join(capfd.readouterr())
    assert rabbitmq_secure_broker.certs.key_password not in texts


async def test_verification_off_is_explicit_and_warns_once(
    rabbitmq_secure_broker: Any, capture: Any
) -> None:
    """The wrong host name and no CA connect only with verify_tls=false, with one warning."""
    url = rabbitmq_secure_broker.amqp_url_for("app", host="127.0.0.1")
    await round_trip(url, verify_tls=False)
    caplog, _ = capture
    warnings = [r for r in caplog.records if "verify_tls=false" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert rabbitmq_secure_broker.passwords["app"] not in caplog.text


async def test_scoped_user_is_refused_other_topics_and_publishing(
    rabbitmq_secure_broker: Any, capture: Any
) -> None:
    """``scoped`` may consume ``allowed.*`` only and publish nowhere: each refusal is an
    AuthorizationError naming the user and the queue or exchange, at subscribe or publish time;
    a second refused publish says the same (the channel the broker closed is reopened)."""
    b = rabbitmq_secure_broker
    url = b.amqp_url_for("scoped")
    run = uuid.uuid4().hex[:8]
    forbidden = Broker(url, connect_timeout=CONNECT_TIMEOUT, **ca(b))

    @forbidden.subscriber(f"other.{run}", group="g", dead_letter=False)
    async def nope(message: Message) -> None:
        pass

    t0 = time.monotonic()
    with pytest.raises(AuthorizationError) as refused:
        async with forbidden:
            pass
    assert time.monotonic() - t0 < CONNECT_TIMEOUT
    text = str(refused.value)
    assert "'scoped'" in text and f"queue 'other.{run}::g'" in text, text
    assert "configure permission" in text

    allowed = Broker(url, connect_timeout=CONNECT_TIMEOUT, **ca(b))

    @allowed.subscriber(f"allowed.{run}", group="g", dead_letter=False)
    async def fine(message: Message) -> None:
        pass

    async with allowed:
        for _ in range(2):
            t0 = time.monotonic()
            with pytest.raises(AuthorizationError) as denied:
                await allowed.publish(f"allowed.{run}", b"x")
            assert time.monotonic() - t0 < CONNECT_TIMEOUT
            text = str(denied.value)
            assert f"publish to topic 'allowed.{run}'" in text and "exchange 'unimq'" in text, text
    caplog, capfd = capture
    everything = caplog.text + "".join(capfd.readouterr()) + error_texts(denied.value)
    assert b.passwords["scoped"] not in everything
    loud = [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.name.split(".")[0] in THIRD_PARTY and r.levelno >= logging.WARNING
    ]
    assert not loud, loud


@versions.only_cases(versions.SECURITY_SMOKE_CASES)
class TestRabbitMQSecureSmoke(ConformanceSuite):
    """The conformance smoke subset (publish, consume, retry, dead letters) over TLS as a user
    with a password, in a virtual host of its own."""

    @pytest.fixture
    def backend(self, rabbitmq_secure_broker: Any) -> Backend:
        return Backend(
            url=rabbitmq_secure_broker.url,
            options=ca(rabbitmq_secure_broker),
            name="rabbitmq-secure",
            time_scale=2.0,
        )


# -- property-based: the masking invariant on the real error paths ------------------------------

PROFILE = settings(
    max_examples=25,
    deadline=None,
    derandomize=os.environ.get("CI", "").lower() == "true",
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# the characters that broke masking or URL parsing before (tests/test_properties_edges.py)
NASTY = st.text(
    alphabet=st.sampled_from(
        [*"abcXYZ019 @/?#:%&=;,[]\\'\"\t\n", "\uff20", "\uff1a", "\u00b2", "é", "\u2028"]
    ),
    max_size=12,
)


def markers_absent(outcome: Outcome) -> None:
    assert "ZqZ" not in outcome.texts and "XwX" not in outcome.texts, outcome.texts


@PROFILE
@given(password=NASTY, tls=st.booleans())
def test_any_wrong_password_is_refused_and_never_shown(
    rabbitmq_secure_broker: Any, capture: Any, password: str, tls: bool
) -> None:
    """A wrong password, raw in the URL with any characters, on either listener: a typed error
    (AuthenticationError, or InvalidURLError for a URL that cannot be read) within the connect
    timeout, and the password in no text produced."""
    b = rabbitmq_secure_broker
    port = b.tls_port if tls else b.plain_port
    url = f"{'amqps' if tls else 'amqp'}://app:ZqZ{password}XwX@localhost:{port}/unimq-secure"
    outcome = asyncio.run(attempt(capture, url, **(ca(b) if tls else {})))
    event(type(outcome.error).__name__)
    assert isinstance(outcome.error, (AuthenticationError, InvalidURLError)), outcome.texts
    assert outcome.seconds < CONNECT_TIMEOUT
    markers_absent(outcome)


@PROFILE
@given(passphrase=NASTY, in_url=st.booleans())
def test_any_wrong_key_passphrase_is_refused_and_never_shown(
    rabbitmq_secure_broker: Any, capture: Any, passphrase: str, in_url: bool
) -> None:
    """A wrong key passphrase, as an option or in the URL's query: ConfigurationError before
    anything is sent, and the passphrase in no text produced."""
    b = rabbitmq_secure_broker
    secret = f"ZqZ{passphrase}XwX"
    options = cert(b, password=None)
    url = b.amqp_url_for(None)
    if in_url:
        url += "?key_password=" + quote(secret, safe="")
    else:
        options["key_password"] = secret
    outcome = asyncio.run(attempt(capture, url, **options))
    assert isinstance(outcome.error, ConfigurationError), outcome.texts
    assert "wrong key_password" in str(outcome.error)
    markers_absent(outcome)
