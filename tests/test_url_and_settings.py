from __future__ import annotations

import pytest

from unimq import Broker, ConfigurationError
from unimq.settings import options_from_env
from unimq.url import BrokerURL, redact


def test_parse_full_url() -> None:
    url = BrokerURL.parse("amqps://user:p%40ss@rabbit.local:5671/vhost?heartbeat=30")
    assert url.scheme == "amqps" and url.host == "rabbit.local" and url.port == 5671
    assert url.username == "user" and url.password is not None
    assert url.password.get_secret_value() == "p@ss"
    assert url.path == "/vhost" and url.query_dict() == {"heartbeat": "30"}
    assert "p%40ss" not in repr(url) and "p%40ss" not in str(url)


def test_multiple_hosts() -> None:
    url = BrokerURL.parse("kafka://a:9092,b:9093,[::1]:9094")
    assert [(h.host, h.port) for h in url.hosts] == [("a", 9092), ("b", 9093), ("::1", 9094)]


def test_redact_masks_passwords_anywhere() -> None:
    assert redact("amqp://u:secret@h/") == "amqp://u:***@h/"
    assert redact("see redis://:pw@h:6379/0 now") == "see redis://:***@h:6379/0 now"


def test_from_env_reads_url_and_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIMQ_URL", "memory://from-env")
    monkeypatch.setenv("UNIMQ_GRACEFUL_TIMEOUT", "7")
    broker = Broker.from_env()
    assert str(broker.url) == "memory://from-env" and broker.graceful_timeout == 7.0


def test_from_env_passes_the_adapters_own_options_to_the_transport() -> None:
    environ = {
        "UNIMQ_URL": "amqp://h",
        "UNIMQ_RABBITMQ_HEARTBEAT": "30",
        "UNIMQ_KAFKA_CLIENT_ID": "not-for-rabbitmq",
        "UNIMQ_TEST_BROKERS": "external",
        "OTHER": "x",
    }
    url, options = options_from_env(environ)
    assert url == "amqp://h" and options == {"heartbeat": "30"}


def test_unrelated_unimq_variables_do_not_reach_the_memory_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("UNIMQ_URL", "memory://")
    monkeypatch.setenv("UNIMQ_TEST_RABBITMQ_IMAGE", "unimq-test/rabbitmq:x")
    monkeypatch.setenv("UNIMQ_KAFKA_CLIENT_ID", "orders")
    assert Broker.from_env().transport_options == {}


def test_from_env_without_url_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNIMQ_URL", raising=False)
    with pytest.raises(ConfigurationError, match="UNIMQ_URL is not set"):
        Broker.from_env()
    assert str(Broker.from_env(default_url="memory://dflt").url) == "memory://dflt"


def test_from_env_bad_value_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="UNIMQ_CONNECT_TIMEOUT"):
        options_from_env({"UNIMQ_URL": "memory://", "UNIMQ_CONNECT_TIMEOUT": "soon"})


def test_from_env_url_password_not_in_errors() -> None:
    with pytest.raises(ConfigurationError) as info:
        options_from_env({"UNIMQ_URL": "amqp://u:hunter2@h", "UNIMQ_CONNECT_TIMEOUT": "-1"})
    assert "hunter2" not in str(info.value)
