"""RabbitMQ ``queue_type`` without a broker: the option, the ladder's arguments, and the words
of the error for an existing queue of the other type (RabbitMQ 3.10 and 4.0 phrase it
differently). The real broker's answers: testcontainers/tests/test_rabbitmq_queue_type.py."""

from __future__ import annotations

import pytest
from unimq_rabbitmq import queue_types, topology
from unimq_rabbitmq.options import RabbitMQOptions

from unimq.errors import ConfigurationError
from unimq.url import BrokerURL

URL = BrokerURL.parse("amqp://rabbit:5672/")


def test_quorum_is_the_default_and_classic_opts_out() -> None:
    assert RabbitMQOptions.parse(URL, {}).queue_type == "quorum"
    assert RabbitMQOptions.parse(URL, {"queue_type": "Classic"}).queue_type == "classic"
    with pytest.raises(ConfigurationError, match="queue_type"):
        RabbitMQOptions.parse(URL, {"queue_type": "lazy"})


def test_quorum_ladder_dead_letters_at_least_once() -> None:
    arguments = topology.ladder_arguments(3, "unimq.delay.L2", "quorum")
    assert arguments == {
        "x-queue-type": "quorum",
        "x-delivery-limit": 2**31 - 1,
        "x-message-ttl": 8000,
        "x-dead-letter-exchange": "unimq.delay.L2",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    classic = topology.ladder_arguments(3, "unimq.delay.L2", "classic")
    assert "x-dead-letter-strategy" not in classic and "x-queue-type" not in classic


@pytest.mark.parametrize(
    "reply",
    [
        # RabbitMQ 4.0
        "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'o::g' in vhost '/': "
        "received 'quorum' but current is 'classic'",
        # RabbitMQ 3.10, a queue declared without x-queue-type
        "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'o::g' in vhost '/': "
        "received the value 'quorum' of type 'longstr' but current is none",
    ],
)
def test_a_classic_queue_is_named_with_what_to_do(reply: str) -> None:
    error = queue_types.inequivalent_queue("o::g", "quorum", Exception(reply))
    text = str(error)
    assert "queue 'o::g' already exists as a classic queue" in text
    assert "queue_type='quorum'" in text and "queue_type='classic'" in text
    assert "rabbitmqctl delete_queue o::g" in text


def test_a_quorum_queue_with_classic_configured() -> None:
    reply = (
        "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'o::g' in vhost '/': "
        "received 'classic' but current is 'quorum'"
    )
    text = str(queue_types.inequivalent_queue("o::g", "classic", Exception(reply)))
    assert "already exists as a quorum queue" in text and "queue_type='quorum'" in text


def test_other_arguments_and_unknown_replies_still_name_the_queue() -> None:
    reply = (
        "PRECONDITION_FAILED - inequivalent arg 'x-single-active-consumer' for queue 'o::g' in "
        "vhost '/': received the value 'true' of type 'bool' but current is none"
    )
    text = str(queue_types.inequivalent_queue("o::g", "quorum", Exception(reply)))
    assert "'o::g'" in text and "x-single-active-consumer" in text and "ordered" in text
    assert "already exists with x-single-active-consumer=none" in text
    assert "declares it with x-single-active-consumer=true" in text
    odd = str(queue_types.inequivalent_queue("o::g", "quorum", Exception("PRECONDITION_FAILED")))
    assert "'o::g'" in odd


def test_a_classic_ladder_queue_first_differs_in_overflow_and_the_probe_says_classic() -> None:
    """RabbitMQ names the first argument that differs; the probe's answer names the type."""
    reply = (
        "PRECONDITION_FAILED - inequivalent arg 'x-overflow' for queue 'unimq.delay.L3' in "
        "vhost '/': received the value 'reject-publish' of type 'longstr' but current is none"
    )
    error = queue_types.inequivalent_queue("unimq.delay.L3", "quorum", Exception(reply), "classic")
    assert "'unimq.delay.L3' already exists as a classic queue" in str(error)
    unknown = str(queue_types.inequivalent_queue("unimq.delay.L3", "quorum", Exception(reply)))
    assert "x-overflow=none" in unknown and "x-overflow=reject-publish" in unknown


def test_a_stream_is_named_and_queue_type_stream_is_offered() -> None:
    reply = (
        "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'o::g' in vhost '/': "
        "received 'quorum' but current is 'stream'"
    )
    text = str(queue_types.inequivalent_queue("o::g", "quorum", Exception(reply)))
    assert "already exists as a stream queue" in text and "set queue_type='stream'" in text


def test_an_unknown_queue_type_is_named_and_no_type_switch_is_offered() -> None:
    reply = (
        "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'o::g' in vhost '/': "
        "received 'quorum' but current is 'delayed'"
    )
    text = str(queue_types.inequivalent_queue("o::g", "quorum", Exception(reply)))
    assert "already exists as a delayed queue" in text and "set queue_type" not in text
