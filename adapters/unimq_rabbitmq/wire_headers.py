"""How unimq's headers travel in an AMQP header table, and back, without losing any.

RabbitMQ gives some header names a meaning of its own: every ``x-`` name (``x-death`` and the
other dead-letter records, ``x-delay``, ``x-match``, ...), and ``CC`` / ``BCC`` (sender-selected
distribution: the broker routes by them and removes ``BCC``). A user header with such a name
must neither steer the broker nor be mistaken for one of its records, and the adapter's own
headers (the key) must not be confused with a user's. So those names are *escaped*: they do not
go into the table as names at all but into one adapter header, :data:`ESCAPED_HEADER`, an
array ``[name, value, name, value, ...]`` of long strings, and come back out of it on receive.

Why an array and not a prefixed name: AMQP table field names are limited (pamqp truncates
names over :data:`MAX_NAME_BYTES` bytes when it encodes them, with only a log warning), so a
prefix would push a name that fits over the limit; an array element is a long string with no
such limit. Every other name goes into the table unchanged, so what other AMQP clients see is
unchanged too.

On receive, raw reserved names are the broker's (its dead-letter records on every delayed
message) or another client's, never a unimq user's, and are left out of ``Delivery.headers``,
as are the adapter's own headers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from unimq import headers as h
from unimq.errors import EncodeError
from unimq.transport import OutgoingMessage

#: Carries the message key: AMQP has no key field.
KEY_HEADER = "unimq-key"
#: Carries the user headers whose names RabbitMQ reserves (see the module docstring).
ESCAPED_HEADER = "unimq-escaped"

#: pamqp truncates longer table field names when it encodes them.
MAX_NAME_BYTES = 128

_RESERVED_NAMES = frozenset({"CC", "BCC", KEY_HEADER, ESCAPED_HEADER})


def reserved(name: str) -> bool:
    """Whether ``name`` cannot go into the header table as it is."""
    return name.startswith("x-") or name in _RESERVED_NAMES


def check_name(name: str) -> None:
    """Refuse a name pamqp would truncate: two names could become one, or a name another."""
    # A name of 32 characters or fewer is at most 128 bytes in UTF-8; only longer ones are
    # encoded to be measured (the publish path is hot).
    if len(name) > MAX_NAME_BYTES // 4 and len(name.encode("utf-8", "surrogatepass")) > (
        MAX_NAME_BYTES
    ):
        raise EncodeError(
            f"header name {name[:40]!r}... is over {MAX_NAME_BYTES} bytes in UTF-8, the longest "
            "header name RabbitMQ carries"
        )


def encode(message: OutgoingMessage) -> tuple[dict[str, Any] | None, str | None]:
    """The header table of ``message`` (``None`` when empty) and its AMQP content type.

    AMQP properties carry what they can (the id, the content type); only the rest becomes a
    header table, which is the costly part of encoding a message.
    """
    table: dict[str, Any] = {}
    escaped: list[str] = []
    message_id = message.message_id
    content_type = message.content_type
    for name, value in message.headers.items():
        if name == h.CONTENT_TYPE:
            content_type = value
        elif (name == h.ID and value == message_id) or (name == h.ATTEMPT and value == "1"):
            continue  # what the receiving side assumes anyway
        elif reserved(name):
            escaped += (name, value)
        else:
            check_name(name)
            table[name] = value
    if escaped:
        table[ESCAPED_HEADER] = escaped
    if message.key is not None:
        table[KEY_HEADER] = message.key
    return table or None, content_type


def escaped_pairs(raw: Any) -> list[tuple[str, Any]]:
    """The ``(name, value)`` pairs of an :data:`ESCAPED_HEADER` value; none when it is not an
    array of an even length (another client's header of the same name)."""
    if not isinstance(raw, list) or len(raw) % 2:
        return []
    return [(text(raw[i]), raw[i + 1]) for i in range(0, len(raw), 2)]


def text(value: Any) -> str:
    """A header value as the ``str`` unimq hands out (bytes from other clients decoded)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def decode(raw: Mapping[str, Any]) -> tuple[dict[str, str], str | None]:
    """The user and bookkeeping headers of a received table, and the message key."""
    headers: dict[str, str] = {}
    key: str | None = None
    for name, value in raw.items():
        if name == KEY_HEADER:
            key = text(value)
        elif name == ESCAPED_HEADER:
            for escaped, escaped_value in escaped_pairs(value):
                headers[escaped] = text(escaped_value)
        elif not reserved(name):
            headers[name] = text(value)
    return headers, key
