"""Subscriber options, timeouts, retry policies and RetryLater: typed errors for bad values,
and a retry delay that is always a finite number."""

from __future__ import annotations

import logging
import math
from datetime import timedelta
from typing import Any

import pytest

from unimq import Broker, ConfigurationError, Message, RetryPolicy
from unimq.errors import RetryLater
from unimq.retry import exponential, fixed
from unimq.settings import options_from_env, positive_seconds

NAN, INF = math.nan, math.inf


def subscribe(**options: Any) -> None:
    broker = Broker("memory://")

    @broker.subscriber("t", group="g", **options)
    async def handle(message: Message) -> None:
        pass


@pytest.mark.parametrize("name", ["ordered", "idempotent", "broadcast"])
@pytest.mark.parametrize("value", ["false", "true", 0, 1, None])
def test_boolean_options_must_be_booleans(name: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=name):
        subscribe(**{name: value})


@pytest.mark.parametrize("value", ["false", "", 1, "0"])
def test_dead_letter_must_be_a_bool_or_a_topic_name(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="dead_letter"):
        subscribe(dead_letter=value)


def test_dead_letter_to_the_own_topic_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="own topic"):
        subscribe(dead_letter="t")


@pytest.mark.parametrize("value", [True, "auto ", None, 1])
def test_ack_must_be_auto_or_manual(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="ack"):
        subscribe(ack=value)


@pytest.mark.parametrize("value", [0, 4097, 10**9, 2.0, True, "4"])
def test_concurrency_is_bounded(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="concurrency"):
        subscribe(concurrency=value)


def test_concurrency_upper_bound_is_accepted() -> None:
    subscribe(concurrency=4096)


@pytest.mark.parametrize("name", ["connect_timeout", "graceful_timeout", "idempotency_lease"])
@pytest.mark.parametrize("value", [NAN, INF, -INF, "nan", "inf", 0, -1, True, "x", None])
def test_timeouts_must_be_finite_and_positive(name: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Broker("memory://", **{name: value})


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_timeouts_from_the_environment_must_be_finite(value: str) -> None:
    with pytest.raises(ConfigurationError, match="CONNECT_TIMEOUT"):
        options_from_env({"UNIMQ_URL": "memory://", "UNIMQ_CONNECT_TIMEOUT": value})


def test_positive_seconds_accepts_numbers_and_numeric_strings() -> None:
    assert positive_seconds("2.5", "x") == 2.5 and positive_seconds(3, "x") == 3.0


def test_kafka_revoke_timeout_must_be_finite() -> None:
    pytest.importorskip("unimq_kafka")
    from unimq_kafka.options import parse_settings

    from unimq.url import BrokerURL

    for value in (NAN, "nan", INF):
        with pytest.raises(ConfigurationError, match="revoke_timeout"):
            parse_settings(BrokerURL.parse("kafka://h:9092"), {"revoke_timeout": value})


# -- RetryLater -------------------------------------------------------------------------------


def test_retry_later_with_a_reason_as_first_argument() -> None:
    exc = RetryLater("service down")
    assert exc.delay is None and exc.reason == "service down" and str(exc) == "service down"


@pytest.mark.parametrize("delay", [NAN, INF, -1.0, timedelta(seconds=-1), [1]])
def test_retry_later_refuses_bad_delays(delay: Any) -> None:
    with pytest.raises(ConfigurationError, match="RetryLater"):
        RetryLater(delay)


def test_retry_later_caps_absurd_delays() -> None:
    from unimq.errors import MAX_RETRY_DELAY

    assert RetryLater(timedelta.max).delay == MAX_RETRY_DELAY
    assert RetryLater(1e300).delay == MAX_RETRY_DELAY


async def test_retry_later_with_a_reason_retries_the_message() -> None:
    broker = Broker("memory://")
    attempts: list[int] = []

    @broker.subscriber("t", group="g", retry=RetryPolicy(max_attempts=2, backoff=fixed(0)))
    async def handle(message: Message) -> None:
        attempts.append(message.attempt)
        if message.attempt == 1:
            raise RetryLater("service down")

    async with broker:
        await broker.publish("t", b"x")
        await broker.drain(timeout=5)
    assert attempts == [1, 2]


# -- RetryPolicy and backoffs -----------------------------------------------------------------


@pytest.mark.parametrize("retry_on", [("ValueError",), "ValueError", (ValueError, 3), (int,)])
def test_retry_on_must_be_exception_classes(retry_on: Any) -> None:
    with pytest.raises(ConfigurationError, match="retry_on"):
        RetryPolicy(retry_on=retry_on)


def test_retry_on_accepts_a_class_or_a_tuple() -> None:
    assert RetryPolicy(retry_on=ValueError).retry_on == (ValueError,)
    assert RetryPolicy(retry_on=(ValueError, KeyError)).retry_on == (ValueError, KeyError)


@pytest.mark.parametrize(
    "backoff",
    [
        lambda attempt: NAN,
        lambda attempt: INF,
        lambda attempt: None,
        lambda attempt: 1 / 0,
        lambda attempt: "soon",
        lambda attempt: -5,
        lambda attempt: 1e300,
    ],
)
def test_delay_for_is_total(backoff: Any, caplog: pytest.LogCaptureFixture) -> None:
    from unimq.errors import MAX_RETRY_DELAY

    policy = RetryPolicy(backoff=backoff)
    for attempt in (1, 2, 50):
        delay = policy.delay_for(attempt)
        assert isinstance(delay, float) and math.isfinite(delay)
        assert 0.0 <= delay <= MAX_RETRY_DELAY


def test_a_failing_backoff_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="unimq")
    policy = RetryPolicy(backoff=lambda attempt: None)
    assert policy.delay_for(1) == 1.0 and policy.delay_for(2) == 2.0  # the default backoff
    assert caplog.text.count("using the default exponential backoff") == 1


@pytest.mark.parametrize("value", [NAN, INF, -1.0, "1", None])
def test_fixed_backoff_refuses_bad_values(value: Any) -> None:
    with pytest.raises(ConfigurationError):
        fixed(value)


@pytest.mark.parametrize("name", ["initial", "factor", "max", "jitter"])
@pytest.mark.parametrize("value", [NAN, INF])
def test_exponential_backoff_refuses_nan_and_inf(name: str, value: float) -> None:
    with pytest.raises(ConfigurationError, match=name):
        exponential(**{name: value})


@pytest.mark.parametrize("value", [0, True, 2.0, "3"])
def test_max_attempts_must_be_an_integer(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_attempts"):
        RetryPolicy(max_attempts=value)
