"""A subscription's delivery reads its record once, eagerly; it must say what the lazy
:class:`~unimq_kafka.record.KafkaRecord` view (used by the delay scheduler and dead-letter
sessions) says of the same record: body, key, headers (packed ones unpacked), topic."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("confluent_kafka")

from unimq_kafka.headers import to_wire
from unimq_kafka.offsets import OffsetTracker
from unimq_kafka.record import KafkaRecord
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
