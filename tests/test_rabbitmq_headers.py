"""RabbitMQ header mapping (``unimq_rabbitmq.wire_headers``), through pamqp's real codec.

Every user header comes back with its name and value, including names RabbitMQ reserves
(``x-*``, ``CC``, ``BCC``) and the adapter's own (``unimq-key``); the adapter's headers never
show up among the delivery's headers; no name is ever truncated (pamqp cuts table field names
over 128 bytes).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp.commands import Basic
from pamqp.frame import marshal, unmarshal
from pamqp.header import ContentHeader
from unimq_rabbitmq import wire_headers

from unimq import headers as h
from unimq.errors import EncodeError
from unimq.transport import OutgoingMessage

SPECIAL_NAMES = ["x-death", "x-delay", "x-match", "x-", "CC", "BCC", "X-Request-Id", "unimq-key"]

names = st.one_of(
    st.sampled_from(SPECIAL_NAMES),
    st.builds(lambda tail: "x-" + tail, st.text(max_size=20)),
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=128),
).filter(lambda name: len(name.encode()) <= wire_headers.MAX_NAME_BYTES)
values = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)

# The headers the property sets itself on every message. A generated user header of one of these
# names would be overwritten when the two maps are merged, so the property leaves them out; it
# still covers every other ``unimq-`` name (hypothesis draws string literals from the code under
# test, so those names do come up). CI failed once on ``user={"unimq-id": ""}``.
FIXED_WIRE_NAMES = frozenset({h.ID, h.ATTEMPT, h.CONTENT_TYPE})
user_names = names.filter(lambda name: name not in FIXED_WIRE_NAMES)


def through_the_wire(message: OutgoingMessage) -> Basic.Properties:
    """The AMQP properties a consumer decodes for ``message``."""
    table, content_type = wire_headers.encode(message)
    properties = Basic.Properties(
        message_id=message.message_id, content_type=content_type, headers=table
    )
    frame = marshal(ContentHeader(properties=properties, body_size=0), 1)
    _consumed, _channel, decoded = unmarshal(frame)
    assert isinstance(decoded, ContentHeader)
    return decoded.properties


@settings(max_examples=300, deadline=None)
@given(user=st.dictionaries(user_names, values, max_size=8), key=st.none() | values)
def test_every_user_header_and_the_key_come_back(user: dict[str, str], key: str | None) -> None:
    fixed = {h.ID: "id-1", h.ATTEMPT: "2", h.CONTENT_TYPE: "text/plain"}
    assert fixed.keys() == FIXED_WIRE_NAMES
    wire = {**user, **fixed}
    message = OutgoingMessage("t", b"", dict(wire), key=key, message_id="id-1")
    properties = through_the_wire(message)
    raw = properties.headers or {}
    assert not [name for name in raw if name.startswith("x-") or name in ("CC", "BCC")], raw
    headers, decoded_key = wire_headers.decode(raw)
    assert decoded_key == key
    assert {n: v for n, v in headers.items() if n not in (h.ID, h.CONTENT_TYPE)} == {
        **user,
        h.ATTEMPT: "2",
    }
    assert properties.content_type == "text/plain"


def test_broker_records_and_other_clients_reserved_headers_are_left_out() -> None:
    raw = {"x-death": [{"count": 1}], "x-first-death-queue": "q", "CC": ["a"], "plain": b"v"}
    assert wire_headers.decode(raw) == ({"plain": "v"}, None)


def test_a_malformed_escaped_header_from_another_client_is_ignored() -> None:
    assert wire_headers.decode({wire_headers.ESCAPED_HEADER: ["odd"]}) == ({}, None)
    assert wire_headers.decode({wire_headers.ESCAPED_HEADER: "text"}) == ({}, None)


@pytest.mark.parametrize("name", ["n" * 129, "é" * 65, "x" * 40 + "😀" * 23])
def test_a_name_pamqp_would_truncate_is_refused(name: str) -> None:
    message = OutgoingMessage("t", b"", {name: "v"})
    with pytest.raises(EncodeError, match="128 bytes"):
        wire_headers.encode(message)


def test_a_name_of_exactly_128_bytes_is_kept_whole() -> None:
    name = "é" * 64
    assert len(name.encode()) == 128
    properties = through_the_wire(OutgoingMessage("t", b"", {name: "v", "x-" + "y" * 126: "w"}))
    assert wire_headers.decode(properties.headers or {})[0] == {name: "v", "x-" + "y" * 126: "w"}
