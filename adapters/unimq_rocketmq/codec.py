"""unimq messages ⇄ rocketmq-python-client messages.

What needs care, and why:

- Headers become user properties (so other clients see them) and come back from them. The
  broker's property encoding drops empty values, so their names travel in
  ``unimq-rmq-empty`` (a JSON list) and are restored on receipt.
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
import time
from collections.abc import Mapping
from typing import Any

from unimq.transport import OutgoingMessage

EMPTY_VALUES = "unimq-rmq-empty"
ESCAPED_VALUES = "unimq-rmq-escaped"
BODY_MARK = "unimq-rmq-body"
KEY = "unimq-key"
INTERNAL = frozenset({EMPTY_VALUES, ESCAPED_VALUES, BODY_MARK, KEY})


def _has_control(value: str) -> bool:
    return any(ord(char) < 0x20 or ord(char) == 0x7F for char in value)


def to_rocketmq(message: OutgoingMessage, physical_topic: str, *, fifo: bool, mixed: bool) -> Any:
    import rocketmq

    out = rocketmq.Message()
    out.topic = physical_topic
    body = message.body
    properties: dict[str, str] = out.properties  # the client's own dict: filled in place
    if body:
        out.body = body
    else:
        out.body = b"\x00"
        properties[BODY_MARK] = "empty"
    empty: list[str] = []
    escaped: list[str] = []
    for name, value in message.headers.items():
        if value == "":
            empty.append(name)
        elif _has_control(value):
            # The proxy refuses control characters in property values (40007), and an error
            # message header often holds a multi-line traceback: JSON-escape those values.
            properties[name] = json.dumps(value, ensure_ascii=False)[1:-1]
            escaped.append(name)
        else:
            properties[name] = value
    if empty:
        properties[EMPTY_VALUES] = json.dumps(empty, ensure_ascii=False)
    if escaped:
        properties[ESCAPED_VALUES] = json.dumps(escaped, ensure_ascii=False)
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
        self.headers = headers_of(properties)
        self.body = body_of(message.body or b"", properties)
        self.key = key_of(message, properties)
        self.native_id: str = message.message_id


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
    return headers


def body_of(body: bytes, properties: Mapping[str, str]) -> bytes:
    return b"" if properties.get(BODY_MARK) == "empty" else body


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
