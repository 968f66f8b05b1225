"""Multi-host Kafka URLs (issue 15): ``kafka://h1:p1,h2:p2,h3:p3`` bootstraps from every node.

A client that names only one node of a cluster cannot connect while that node is down; with
every node in the URL librdkafka tries the next. These checks need no broker: they pin what
reaches librdkafka's ``bootstrap.servers`` and what an error or ``repr`` shows.
"""

from __future__ import annotations

import pytest
from unimq_kafka.options import parse_settings

from unimq import Broker
from unimq.errors import InvalidURLError
from unimq.url import BrokerURL


@pytest.mark.parametrize(
    ("url", "servers"),
    [
        (
            "kafka://127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094",
            "127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094",
        ),
        # a node without a port gets Kafka's default one
        ("kafka://k1,k2:19092,k3", "k1:9092,k2:19092,k3:9092"),
        # IPv6 literals keep their brackets for librdkafka
        ("kafka://[::1]:9092,127.0.0.1:9093", "[::1]:9092,127.0.0.1:9093"),
    ],
)
def test_every_node_of_the_url_is_a_bootstrap_server(url: str, servers: str) -> None:
    assert parse_settings(BrokerURL.parse(url), {}).common["bootstrap.servers"] == servers


def test_credentials_apply_to_every_node_and_stay_out_of_the_shown_url() -> None:
    settings = parse_settings(BrokerURL.parse("kafka://app:s3cret@k1:9092,k2:9092"), {})
    assert settings.common["bootstrap.servers"] == "k1:9092,k2:9092"
    assert settings.common["sasl.username"] == "app"
    assert "s3cret" not in settings.url and "s3cret" not in repr(settings)
    assert settings.url == "kafka://app:***@k1:9092,k2:9092"


def test_a_broker_on_a_multi_host_url_does_not_show_the_password() -> None:
    broker = Broker("kafka://app:s3cret@127.0.0.1:9092,127.0.0.1:9093")
    assert "s3cret" not in repr(broker)


@pytest.mark.parametrize(
    "bad",
    [
        "kafka://k1:9092,k2:notaport",  # not a port
        "kafka://k1:9092,k2:70000",  # out of range
        "kafka://k1:9092, k2:9092",  # a space is no host name
    ],
)
def test_a_malformed_node_in_the_list_is_a_typed_error(bad: str) -> None:
    with pytest.raises(InvalidURLError, match="comma-separated"):
        parse_settings(BrokerURL.parse(bad), {})
