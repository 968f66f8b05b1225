"""How a consumed Kafka record looks through unimq's :class:`~unimq.transport.Delivery`.

One decoding for every kind of delivery the adapter hands out (subscriptions, the delay
scheduler, dead-letter sessions): key and header values as UTF-8 text (invalid bytes
replaced), a missing value as ``b""`` and ``native_id`` = ``topic/partition/offset``.
Headers that had to be packed to travel intact are unpacked (:mod:`.headers`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE

from .headers import PACKED, from_wire


def decode_headers(raw: list[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """A record's headers as unimq sees them: values as UTF-8 text (invalid bytes replaced), a
    missing value as ``""``, what :func:`.headers.to_wire` packed unpacked.

    ``bytes.decode()`` with no arguments takes CPython's UTF-8 fast path (about a third of the
    cost of ``decode("utf-8", "replace")``, which must look the codec and the error handler up
    on every call); where a value is missing or not valid UTF-8 the general way decodes all of
    them again, with the same result as if it had done so from the start. (A subscription
    decodes the four headers of a plain unimq publish inline, ``KafkaDelivery.hand_out``, and
    comes here for every other record.)"""
    if raw is None:
        return {}
    try:
        headers = {name: value.decode() for name, value in raw}  # type: ignore[union-attr]
    except (AttributeError, UnicodeDecodeError):  # a None value, or bytes that are not UTF-8
        headers = {
            name: value.decode("utf-8", "replace") if value is not None else ""
            for name, value in raw
        }
    if PACKED in headers:
        from_wire(headers)
    return headers


def decode_key(key: bytes) -> str:
    """A record's key as text (invalid UTF-8 replaced); ``decode()`` first, as above."""
    try:
        return key.decode()
    except UnicodeDecodeError:
        return key.decode("utf-8", "replace")


class KafkaRecord:
    """A read-only view of one ``confluent_kafka.Message``; subclasses add settling."""

    __slots__ = ("_headers", "_message")

    def __init__(self, message: Any) -> None:
        self._message = message
        self._headers: dict[str, str] | None = None

    @property
    def topic(self) -> str:
        return str(self._message.topic())

    @property
    def partition(self) -> int:
        return int(self._message.partition())

    @property
    def offset(self) -> int:
        return int(self._message.offset())

    @property
    def key(self) -> str | None:
        key = self._message.key()
        if key is None:
            return None
        return decode_key(key) if isinstance(key, bytes) else str(key)

    @property
    def headers(self) -> Mapping[str, str]:
        headers = self._headers
        if headers is None:
            headers = self._headers = decode_headers(self._message.headers())
        return headers

    @property
    def body(self) -> bytes:
        value = self._message.value()
        return value if value is not None else b""

    @property
    def native_id(self) -> str:
        message = self._message
        return f"{message.topic()}/{message.partition()}/{message.offset()}"

    @property
    def timestamp_ms(self) -> int:
        return int(self._message.timestamp()[1])

    @property
    def timestamp(self) -> float | None:
        """The record's timestamp in epoch seconds (``SupportsTimestamp``), if it has one."""
        kind, ms = self._message.timestamp()
        return ms / 1000 if kind != TIMESTAMP_NOT_AVAILABLE and ms > 0 else None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.native_id}>"
