"""unimq messages ⇄ rocketmq-python-client messages.

What needs care, and why:

- Headers become user properties (so other clients see them) and come back from them, with
  every header unimq accepts surviving the trip (nothing is dropped silently):

  - the broker's property encoding drops empty values, so their names travel in
    ``unimq-rmq-empty`` (a JSON list) and are restored on receipt;
  - the proxy refuses ISO control characters (C0, DEL, C1) in values: such values are
    JSON-escaped and listed in ``unimq-rmq-escaped``;
  - the proxy refuses names it reserves for the system (``KEYS``, ``TAGS``, ``UNIQ_KEY``,
    ``DELAY``, ``__STARTDELIVERTIME``, ...) and names with control characters. The reserved
    set grows between broker versions, so every name shaped like one (only ``A-Z 0-9 _ #``,
    or starting ``_``) and every name with a control character travels in one property,
    ``unimq-rmq-headers`` (a JSON object), instead of under its own name;
  - the proxy refuses more than 16 KiB of properties in all (``maxUserPropertySize``) while
    unimq accepts 32 KiB of headers: when the properties would pass :data:`PROPERTY_BUDGET`
    (or :data:`MAX_PROPERTIES`), every header but unimq's bookkeeping moves into the body,
    which then starts with them (a 4-byte length and a JSON object; ``unimq-rmq-body:
    headers``), so bodies are limited to :data:`MAX_BODY_WITH_HEADERS`.

  Only unimq's own property names start ``unimq-``, a namespace publishers cannot use, so the
  internal properties never collide with a user header and never show in
  ``Delivery.headers``.
- Bodies may be empty in unimq; the client refuses empty bodies, so an empty body is sent as
  one byte with ``unimq-rmq-body: empty``.
- The key goes to the message's ``keys`` (searchable in the dashboard). The broker splits keys
  on spaces, so a key containing whitespace is also carried verbatim in ``unimq-key``.
- Every message on a non-FIFO topic is sent as a *timer* message (``delivery_timestamp``):
  topics are ``DELAY`` typed because brokers refuse ``MIXED`` topics unless
  ``enableMixedMessageType`` is on, and a DELAY topic only accepts DELAY messages. A timestamp
  already past is delivered at once (measured ~30 ms). The client writes
  ``delivery_timestamp`` as whole *seconds* into the protobuf Timestamp but reads it back in
  *milliseconds*; we write ``floor(deliver_at)``, which arrives up to 1 s early, and the core
  holds early deliveries (≤ 2 s) in place until their ``unimq-deliver-at``, to the millisecond.
- FIFO topics take only FIFO messages (``message_group``), which cannot carry a delivery
  timestamp: a delayed message for an ordered topic is sent undelayed and the core re-hops it
  through the group's (DELAY-typed) retry topic.
"""

from __future__ import annotations

import json
import math
import re
import struct
import time
from collections.abc import Mapping
from typing import Any

from unimq import headers as h
from unimq.transport import OutgoingMessage

from .options import MAX_BODY

EMPTY_VALUES = "unimq-rmq-empty"
ESCAPED_VALUES = "unimq-rmq-escaped"
PACKED = "unimq-rmq-headers"
BODY_MARK = "unimq-rmq-body"
KEY = "unimq-key"
#: On a half message that stands for a plain publish to a transactional topic: a check-back
#: commits it (``transactions``).
AUTOCOMMIT = "unimq-rmq-autocommit"
INTERNAL = frozenset({EMPTY_VALUES, ESCAPED_VALUES, PACKED, BODY_MARK, KEY, AUTOCOMMIT})

#: The proxy's default ``maxUserPropertySize`` is 16 KiB (names and values): stay below it.
PROPERTY_BUDGET = 14 * 1024
#: The proxy's default ``userPropertyMaxNum`` is 128.
MAX_PROPERTIES = 100
#: Room kept in the body for headers that do not fit in properties (unimq accepts 32 KiB of
#: user headers; dead-letter diagnostics and JSON escaping come on top).
HEADER_ROOM = 128 * 1024
MAX_BODY_WITH_HEADERS = MAX_BODY - HEADER_ROOM

_EMPTY_BODY = "empty"
_HEADERS_BODY = "headers"
_LENGTH = struct.Struct(">I")
# Java's Character.isISOControl, which the proxy applies to property names and values.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# Names shaped like RocketMQ's system properties (MessageConst): KEYS, 1ST_POP_TIME, __CRC32#.
_SYSTEM_LIKE = re.compile("[A-Z0-9_#]+|_.*", re.DOTALL)
# What json.dumps(ensure_ascii=False) leaves raw but the proxy refuses: DEL and C1.
_C1_ESCAPES = {code: f"\\u{code:04x}" for code in range(0x7F, 0xA0)}


def _has_control(value: str) -> bool:
    return _CONTROL.search(value) is not None


def _json(value: Any) -> str:
    """JSON text without any ISO control character (valid for a property value)."""
    return json.dumps(value, ensure_ascii=False).translate(_C1_ESCAPES)


def _native_name(name: str) -> bool:
    """Whether a header can travel as a property of its own name."""
    return _SYSTEM_LIKE.fullmatch(name) is None and not _has_control(name)


def _size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _fits_in_properties(headers: Mapping[str, str]) -> bool:
    """Whether the headers, as properties, stay within the proxy's limits. Names count twice
    (an empty or escaped value's name is listed again in an internal property) and text with
    control characters at its JSON-escaped size."""
    if len(headers) > MAX_PROPERTIES:
        return False
    total = 0
    for name, value in headers.items():
        if _has_control(name) or _has_control(value):
            total += 2 * _size(_json(name)) + _size(_json(value))
        else:
            total += 2 * _size(name) + _size(value)
        if total > PROPERTY_BUDGET:
            return False
    return True


def to_rocketmq(message: OutgoingMessage, physical_topic: str, *, fifo: bool, mixed: bool) -> Any:
    import rocketmq

    out = rocketmq.Message()
    out.topic = physical_topic
    body = message.body
    headers: Mapping[str, str] = message.headers
    properties: dict[str, str] = out.properties  # the client's own dict: filled in place
    if not _fits_in_properties(headers):
        # Too many or too large for the proxy: keep the bookkeeping as properties (the core
        # and other tools read it there), carry the rest at the start of the body.
        inside = {n: v for n, v in headers.items() if n not in h.BOOKKEEPING}
        headers = {n: v for n, v in headers.items() if n in h.BOOKKEEPING}
        packed = json.dumps(inside, ensure_ascii=False).encode("utf-8")
        body = _LENGTH.pack(len(packed)) + packed + body
        properties[BODY_MARK] = _HEADERS_BODY
    if body:
        out.body = body
    else:
        out.body = b"\x00"
        properties[BODY_MARK] = _EMPTY_BODY
    empty: list[str] = []
    escaped: list[str] = []
    foreign: dict[str, str] = {}
    for name, value in headers.items():
        if not _native_name(name):
            foreign[name] = value
        elif value == "":
            empty.append(name)
        elif _has_control(value):
            # The proxy refuses control characters in property values (40007), and an error
            # message header often holds a multi-line traceback: JSON-escape those values.
            properties[name] = _json(value)[1:-1]
            escaped.append(name)
        else:
            properties[name] = value
    if empty:
        properties[EMPTY_VALUES] = _json(empty)
    if escaped:
        properties[ESCAPED_VALUES] = _json(escaped)
    if foreign:
        properties[PACKED] = _json(foreign)
    key = message.key
    if key:
        if key.strip():
            out.keys = key
        if key != key.strip() or any(char.isspace() for char in key):
            properties[KEY] = key
    if fifo:
        out.message_group = key or message.message_id or message.headers.get("unimq-id") or "-"
        return out
    if message.deliver_at is not None:
        out.delivery_timestamp = math.floor(message.deliver_at)
    elif not mixed:
        out.delivery_timestamp = int(time.time()) - 1  # already due: delivered at once
    return out


class Received:
    """A received client message as unimq sees it: what a delivery exposes, its topic aside
    (subscriptions and dead-letter sessions add the topic and the settling)."""

    __slots__ = ("_message", "body", "headers", "key", "native_id")

    def __init__(self, message: Any) -> None:
        properties: dict[str, str] = dict(message.properties or {})
        self._message = message
        self.headers, self.body = decode(properties, message.body or b"")
        self.key = key_of(message, properties)
        self.native_id: str = message.message_id

    @property
    def timestamp(self) -> float | None:
        """The born time (the producer's send time) in epoch seconds (``SupportsTimestamp``)."""
        born = getattr(self._message, "born_timestamp", None)
        return born / 1000 if isinstance(born, (int, float)) and born > 0 else None


def decode(properties: Mapping[str, str], body: bytes) -> tuple[dict[str, str], bytes]:
    """The headers and the body a message was published with (see the module docstring)."""
    headers = headers_of(properties)
    mark = properties.get(BODY_MARK)
    if mark == _EMPTY_BODY:
        return headers, b""
    if mark == _HEADERS_BODY and len(body) >= _LENGTH.size:
        (length,) = _LENGTH.unpack_from(body)
        end = _LENGTH.size + length
        try:
            inside = json.loads(body[_LENGTH.size : end].decode("utf-8"))
        except ValueError:
            return headers, body  # not ours after all: leave the body as it came
        if isinstance(inside, dict):
            headers.update({str(k): str(v) for k, v in inside.items()})
        return headers, body[end:]
    return headers, body


def headers_of(properties: Mapping[str, str]) -> dict[str, str]:
    headers = {name: value for name, value in properties.items() if name not in INTERNAL}
    escaped = properties.get(ESCAPED_VALUES)
    if escaped:
        try:
            for name in json.loads(escaped):
                if name in headers:
                    headers[name] = json.loads(f'"{headers[name]}"')
        except ValueError:
            pass
    empty = properties.get(EMPTY_VALUES)
    if empty:
        try:
            for name in json.loads(empty):
                headers[str(name)] = ""
        except ValueError:
            pass
    packed = properties.get(PACKED)
    if packed:
        try:
            foreign = json.loads(packed)
        except ValueError:
            foreign = None
        if isinstance(foreign, dict):
            headers.update({str(k): str(v) for k, v in foreign.items()})
    return headers


def key_of(message: Any, properties: Mapping[str, str]) -> str | None:
    verbatim = properties.get(KEY)
    if verbatim is not None:
        return verbatim
    keys = message.keys
    if keys:
        return " ".join(sorted(keys))
    if "unimq-id" in properties:
        return None  # ours, published without a key (a FIFO group was only a shard)
    group: str | None = message.message_group
    return group or None
