"""RabbitMQ security options without a broker: what is refused before anything connects.

The refusals a broker produces (wrong password, TLS, permissions) are checked on the secured
real broker: testcontainers/tests/test_security_rabbitmq.py.
"""

from __future__ import annotations

import pytest

from unimq import Broker
from unimq.errors import ConfigurationError


def test_external_needs_amqps_and_a_certificate() -> None:
    with pytest.raises(ConfigurationError, match="needs amqps:// and cert_file"):
        Broker("amqp://rabbit:5672/", auth_mechanism="external", cert_file="c.pem")
    with pytest.raises(ConfigurationError, match="needs amqps:// and cert_file"):
        Broker("amqps://rabbit:5671/", auth_mechanism="EXTERNAL")


def test_unknown_mechanism_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match="auth_mechanism"):
        Broker("amqps://rabbit:5671/", auth_mechanism="kerberos")


async def test_unreadable_files_are_configuration_errors_and_hide_the_passphrase() -> None:
    broker = Broker(
        "amqps://u:pw-Secret1@rabbit.invalid:5671/",
        ca_file="/nonexistent/ca.pem",
        key_password="kp-Secret2",
    )
    with pytest.raises(ConfigurationError, match="cannot read ca_file") as refused:
        await broker.connect()
    text = f"{refused.value} {refused.value!r} {broker!r}"
    assert "Secret1" not in text and "Secret2" not in text


async def test_missing_client_certificate_is_a_configuration_error() -> None:
    broker = Broker("amqps://rabbit.invalid:5671/", cert_file="/nonexistent/client.pem")
    with pytest.raises(ConfigurationError, match="cannot read the client certificate"):
        await broker.connect()
