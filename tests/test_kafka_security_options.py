"""Kafka TLS options: verification is explicit and on by default; turning it off warns once."""

from __future__ import annotations

import logging

import pytest

pytest.importorskip("confluent_kafka")

from unimq_kafka import security
from unimq_kafka.options import parse_settings

from unimq.errors import ConfigurationError
from unimq.tls_diagnosis import TLSProbe, diagnose
from unimq.url import BrokerURL


def settings(url: str, **options: object):  # type: ignore[no-untyped-def]
    return parse_settings(BrokerURL.parse(url), options)


def test_tls_verifies_certificate_and_host_name_by_default() -> None:
    s = settings("kafka://u:p@h:9093?security_protocol=SASL_SSL&sasl_mechanism=SCRAM-SHA-512")
    assert s.common["enable.ssl.certificate.verification"] is True
    assert s.common["ssl.endpoint.identification.algorithm"] == "https"
    assert s.username == "u"


def test_plaintext_gets_no_tls_settings() -> None:
    s = settings("kafka://h:9092")
    assert "ssl.endpoint.identification.algorithm" not in s.common


@pytest.mark.parametrize("value", [False, "false", "0", "off"])
def test_ssl_verify_false_turns_both_checks_off(value: object) -> None:
    s = settings("kafka://h:9093?security_protocol=SSL", ssl_verify=value)
    assert s.common["enable.ssl.certificate.verification"] is False
    assert s.common["ssl.endpoint.identification.algorithm"] == "none"


def test_ssl_verify_rejects_other_values() -> None:
    with pytest.raises(ConfigurationError, match="ssl_verify"):
        settings("kafka://h:9093?security_protocol=SSL", ssl_verify="maybe")


def test_raw_settings_win_and_still_warn(caplog: pytest.LogCaptureFixture) -> None:
    url = (
        "kafka://h:9093?security_protocol=SSL&librdkafka_ssl_endpoint_identification_algorithm=none"
    )
    s = settings(url)
    assert s.common["ssl.endpoint.identification.algorithm"] == "none"
    caplog.set_level(logging.WARNING, "unimq.kafka")
    security.warn_if_unverified(s.common, s.url + "#raw-settings-test")
    security.warn_if_unverified(s.common, s.url + "#raw-settings-test")
    warnings = [r for r in caplog.records if "turned off" in r.message]
    assert len(warnings) == 1
    assert "host name check" in warnings[0].message


def test_probe_repr_hides_the_key_passphrase() -> None:
    probe = TLSProbe("h", 1, True, key_password="s3cret-passphrase")
    assert "s3cret-passphrase" not in repr(probe)


def test_diagnosis_of_an_unreachable_port_is_none() -> None:
    assert diagnose(TLSProbe("127.0.0.1", 1, True, timeout=0.5)) is None
    assert diagnose(TLSProbe("127.0.0.1", 1, False, timeout=0.5)) is None
