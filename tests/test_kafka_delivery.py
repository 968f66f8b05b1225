"""A subscription's delivery reads its record once, eagerly; it must say what the lazy
:class:`~unimq_kafka.record.KafkaRecord` view (used by the delay scheduler and dead-letter
sessions) says of the same record: body, key, headers (packed ones unpacked), topic."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("confluent_kafka")

import confluent_kafka
from unimq_kafka import subscription
from unimq_kafka.headers import PACKED, from_wire, to_wire
from unimq_kafka.offsets import OffsetTracker, PartitionOffsets
from unimq_kafka.record import KafkaRecord, decode_headers
from unimq_kafka.subscription import delivery_class


class _Record:
    def __init__(self, value: Any, key: Any, headers: Any) -> None:
        self._value, self._key, self._headers = value, key, headers

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 7

    def value(self) -> Any:
        return self._value

    def key(self) -> Any:
        return self._key

    def headers(self) -> Any:
        return self._headers


_bytes = st.one_of(st.none(), st.binary(max_size=8))
_raw_headers = st.one_of(st.none(), st.lists(st.tuples(st.text(max_size=5), _bytes), max_size=4))
_text = st.text(st.sampled_from("ab\x00é"), max_size=4)  # NUL: packed on the wire
_user_headers = st.dictionaries(_text, _text, max_size=3)


def _views(record: _Record) -> tuple[KafkaRecord, Any]:
    tracker = OffsetTracker()
    tracker.assign([("t", 0)])
    with tracker.lock:
        [delivery] = tracker.handed_locked([record], delivery_class(tracker, None))
    return KafkaRecord(record), delivery


@given(_bytes, _bytes, _raw_headers)
def test_a_delivery_reads_a_record_as_the_record_view_does(
    value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes | None]] | None
) -> None:
    lazy, eager = _views(_Record(value, key, headers))
    assert (eager.body, eager.key, dict(eager.headers), eager.topic) == (
        lazy.body,
        lazy.key,
        dict(lazy.headers),
        lazy.topic,
    )
    assert (eager.native_id, eager.partition, eager.offset) == ("t/0/7", 0, 7)


@given(_user_headers)
def test_packed_headers_are_unpacked(user: dict[str, str]) -> None:
    wire = [
        (name, text if isinstance(text, bytes) else text.encode())
        for name, text in to_wire(dict(user)).items()
    ]
    lazy, eager = _views(_Record(b"x", b"k", wire))
    assert dict(eager.headers) == dict(lazy.headers) == user


# -- the decoding's fast paths (issue 14: the per-record cost of the consume path) -----------

_PLAIN = ("unimq-id", "unimq-attempt", "unimq-content-type", "unimq-published-at")
_names = st.one_of(st.sampled_from([*_PLAIN, PACKED]), st.text(max_size=5))
_values = st.one_of(
    st.none(),
    st.binary(max_size=8),
    st.text(max_size=6).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"\xff", b"\xed\xa0\x80", b"{}", b'{"a\\u0000": "b"}', b"[1]"]),
)
#: Header lists as a record may carry them: four (a plain publish's count) most often, with
#: missing values, bytes that are not UTF-8 (a lone surrogate's encoding among them),
#: repeated names and the packed header.
_records_headers = st.one_of(
    st.none(),
    st.lists(st.tuples(_names, _values), min_size=4, max_size=4),
    st.lists(st.tuples(_names, _values), max_size=6),
)


def _reference(raw: list[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """How a record's headers read before the fast paths (the specification they keep)."""
    if raw is None:
        return {}
    headers = {
        name: value.decode("utf-8", "replace") if value is not None else "" for name, value in raw
    }
    if PACKED in headers:
        from_wire(headers)
    return headers


@given(_records_headers)
def test_headers_decode_as_the_general_way_did(raw: list[tuple[str, bytes | None]] | None) -> None:
    expected = _reference(None if raw is None else list(raw))
    assert decode_headers(None if raw is None else list(raw)) == expected
    _, delivery = _views(_Record(b"x", b"k", None if raw is None else list(raw)))
    assert delivery.headers == expected
    assert list(delivery.headers.items()) == list(expected.items())  # the same order, too


@given(st.one_of(st.none(), _values.filter(lambda v: v is not None)))
def test_a_key_decodes_as_the_general_way_did(key: bytes | None) -> None:
    lazy, eager = _views(_Record(b"x", key, None))
    expected = None if key is None else key.decode("utf-8", "replace")
    assert eager.key == lazy.key == expected


def test_a_plain_record_is_decoded_without_the_general_way(monkeypatch: Any) -> None:
    """The headers of a plain unimq publish (four, valid UTF-8) are decoded inline when a
    subscription hands its records out: no call per record into ``decode_headers``."""

    def general(raw: Any) -> dict[str, str]:
        raise AssertionError("decode_headers called for a plain record")

    monkeypatch.setattr(subscription, "decode_headers", general)
    raw = [(name, b"1") for name in _PLAIN]
    _, delivery = _views(_Record(b"x", b"k", raw))
    assert delivery.headers == dict.fromkeys(_PLAIN, "1")


@st.composite
def _interleaved(draw: Any) -> list[tuple[str, int, int]]:
    """Records of a few partitions of two topics in runs, as consume() returns them."""
    out: list[tuple[str, int, int]] = []
    next_offset: dict[tuple[str, int], int] = {}
    for _ in range(draw(st.integers(0, 6))):
        tp = (draw(st.sampled_from(["t", "u"])), draw(st.integers(0, 2)))
        for _ in range(draw(st.integers(1, 4))):
            offset = next_offset.get(tp, 0)
            next_offset[tp] = offset + draw(st.integers(1, 2))
            out.append((*tp, offset))
    return out


class _OneByOne:
    """The reference way to hand records out, one at a time (what ``OffsetTracker`` did before
    the delivery class's ``hand_out`` took over): each record of an assigned partition has its
    offset registered and is paired with its partition's state."""

    @staticmethod
    def hand_out(
        messages: list[Any], parts: Mapping[tuple[str, int], PartitionOffsets]
    ) -> list[tuple[Any, PartitionOffsets]]:
        out = []
        for message in messages:
            state = parts.get((message.topic(), message.partition()))
            if state is not None:
                state.handed.append(message.offset())
                out.append((message, state))
        return out


@given(_interleaved(), st.sets(st.tuples(st.sampled_from(["t", "u"]), st.integers(0, 2))))
def test_hand_out_hands_out_what_the_general_way_does(
    records: list[tuple[str, int, int]], assigned: set[tuple[str, int]]
) -> None:
    """A subscription's delivery class hands a batch out in one loop (one state look-up per
    run of a partition); the one-at-a-time reference way must agree: same records,
    same order, same states, same offsets registered per partition."""
    messages = [
        confluent_kafka.Message(topic=t, partition=p, offset=o, value=b"v") for t, p, o in records
    ]
    fast, general = OffsetTracker(), OffsetTracker()
    for tracker in (fast, general):
        tracker.assign(sorted(assigned))
    with fast.lock:
        handed = fast.handed_locked(messages, delivery_class(fast, None))
    with general.lock:
        pairs = general.handed_locked(messages, _OneByOne())
    assert [d._message for d in handed] == [m for m, _ in pairs]
    assert [d._state.tp for d in handed] == [s.tp for _, s in pairs]
    assert [d._offset for d in handed] == [m.offset() for m, _ in pairs]
    for tp in assigned:
        assert list(fast._parts[tp].handed) == list(general._parts[tp].handed)
