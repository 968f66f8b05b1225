"""RocketMQ codec without a broker: every header unimq accepts becomes properties the proxy
takes (no reserved-looking or control-character names, no control characters in values,
within its 16 KiB and 128-property limits) and comes back unchanged."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("rocketmq")

from unimq_rocketmq import codec

from unimq.transport import OutgoingMessage

CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
SYSTEM = {"KEYS", "TAGS", "UNIQ_KEY", "DELAY", "WAIT", "RETRY_TOPIC", "__STARTDELIVERTIME"}


def _valid_name(name: str) -> bool:
    return 0 < len(name.encode()) <= 128 and name[:6].lower() != "unimq-"


HEADERS = st.dictionaries(
    st.one_of(st.text(min_size=1, max_size=30), st.sampled_from(sorted(SYSTEM))).filter(
        _valid_name
    ),
    st.text(max_size=60),
    max_size=10,
)


class _Received:
    """What the client hands a consumer: the producer's properties, body and keys."""

    def __init__(self, out: Any) -> None:
        self.properties = dict(out.properties)
        self.body = out.body
        self.keys = [out.keys] if out.keys else []
        self.message_group = out.message_group
        self.message_id = "id"


def _roundtrip(headers: dict[str, str], body: bytes = b"body") -> tuple[Any, codec.Received]:
    message = OutgoingMessage(topic="t", body=body, headers={"unimq-id": "i", **headers})
    out = codec.to_rocketmq(message, "t", fifo=False, mixed=False)
    return out, codec.Received(_Received(out))


def _assert_acceptable(properties: dict[str, str]) -> None:
    assert len(properties) <= 128
    assert sum(len(k.encode()) + len(v.encode()) for k, v in properties.items()) <= 16 * 1024
    for name, value in properties.items():
        assert not CONTROL.search(name) and not CONTROL.search(value), (name, value)
        assert name not in SYSTEM and not name.startswith("_"), name


@settings(max_examples=300)
@given(HEADERS, st.binary(max_size=20))
def test_headers_round_trip_through_properties(headers: dict[str, str], body: bytes) -> None:
    out, received = _roundtrip(headers, body)
    _assert_acceptable(out.properties)
    assert received.headers == {"unimq-id": "i", **headers}
    assert received.body == body


@pytest.mark.parametrize(
    "headers",
    [
        {"big": "v" * 30_000},
        {f"h{i}": str(i) for i in range(300)},
        {"KEYS": "\x00" * 5000, "x": "\x85" * 3000},
    ],
)
def test_headers_over_the_property_limits_travel_in_the_body(headers: dict[str, str]) -> None:
    out, received = _roundtrip(headers, b"payload")
    _assert_acceptable(out.properties)
    assert out.properties["unimq-id"] == "i"  # bookkeeping stays a property
    assert received.headers == {"unimq-id": "i", **headers}
    assert received.body == b"payload"


def test_internal_properties_never_show_as_headers() -> None:
    out, received = _roundtrip({"KEYS": "", "e": "", "c": "\n"}, b"")
    assert set(out.properties) & codec.INTERNAL
    assert not set(received.headers) & codec.INTERNAL
    assert received.body == b""
