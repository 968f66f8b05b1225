"""Publish arguments, checked before anything is sent.

Every backend has its own limits and its own way of failing on bad input: pamqp (RabbitMQ) cuts
long header names and cannot marshal a lone surrogate, a huge delay overflows a timestamp after
the broker already holds the message, NaN compares false with everything. ``Broker.publish``
therefore checks its arguments here first and raises :class:`~unimq.errors.InvalidMessageError`
(a :class:`~unimq.errors.ConfigurationError`) naming the argument, so a caller that catches
``UnimqError`` never sees a bare ``ValueError`` and a retrying caller never duplicates a message
that half-failed. The limits are the smallest common ones of the supported brokers
(docs/configuration.md, "Limits"):

- header names: 1..128 UTF-8 bytes (pamqp, RabbitMQ's codec, cuts longer names); names starting
  ``unimq-`` are reserved, except the dead-letter diagnostics (``headers.DLQ_DIAGNOSTICS``) and
  ``unimq-replayed-at`` (:data:`ALLOWED_RESERVED`), so a dead letter can be republished with them;
- header values: ``str`` (``int``/``float``/``bool`` are converted with ``str()``; NaN and
  infinity are refused); all names and values together at most 32 KiB (every adapter carries
  that much; RocketMQ's moves header sets over its proxy's 16 KiB into the body);
- ``key``: at most 255 UTF-8 bytes; ``message_id`` and ``topic``: 1..255 UTF-8 bytes (AMQP
  ``shortstr``);
- every string must be encodable as UTF-8 (no lone surrogates);
- ``delay``: finite, ``>= 0``, at most :data:`MAX_DELAY` seconds; ``deliver_at``: timezone-aware
  and no later than ``now + MAX_DELAY``.

The common case (no headers, ASCII key and id) costs a few ``isinstance`` and ``len`` calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import uuid_utils

from . import envelope
from . import headers as h
from .codec import encode
from .errors import ConfigurationError, InvalidMessageError

#: The ``unimq-`` headers a publisher may set: the ones a handler sees on a dead letter (its
#: diagnostics, and the mark of a replay), so that it can republish the message as it got it.
ALLOWED_RESERVED = h.DLQ_DIAGNOSTICS | {getattr(h, "REPLAYED_AT", "unimq-replayed-at")}

MAX_NAME_BYTES = 255
MAX_HEADER_NAME_BYTES = 128
MAX_HEADERS_BYTES = 32 * 1024
#: The longest delay unimq accepts: 10 years (365-day years), in seconds. Beyond it a due time
#: is a mistake (a ``timedelta.max``, a timestamp passed as a delay), not a plan.
MAX_DELAY = 10 * 365 * 86400.0


def utf8_size(value: str, what: str) -> int:
    """The UTF-8 size of ``value``, or :class:`InvalidMessageError` if it has lone surrogates."""
    if value.isascii():
        return len(value)
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        pass  # raised below, outside the except: no __context__ holding the whole value
    raise InvalidMessageError(
        f"{what} is not valid Unicode text (it contains a lone surrogate) and cannot be "
        "encoded as UTF-8"
    )


def check_name(value: Any, what: str, *, optional: bool = False) -> None:
    """``topic``/``key``/``message_id``: a string of 1..255 UTF-8 bytes (``key`` may be empty)."""
    if type(value) is str and value.isascii() and 0 < len(value) <= MAX_NAME_BYTES:
        return  # the common case, checked without a call per part
    if not isinstance(value, str):
        raise InvalidMessageError(
            f"{what} must be a {'string or None' if optional else 'non-empty string'}, "
            f"got {type(value).__name__}"
        )
    size = utf8_size(value, what)
    if (size == 0 and not optional) or size > MAX_NAME_BYTES:
        raise InvalidMessageError(
            f"{what} must be {'at most' if optional else '1 to'} {MAX_NAME_BYTES} UTF-8 bytes, "
            f"got {size}"
        )


def user_headers(headers: Any) -> dict[str, str]:
    """The publisher's headers as the ``str -> str`` dict that goes on the wire."""
    wire: dict[str, str] = {}
    if headers is None:
        return wire
    if not isinstance(headers, Mapping):
        raise InvalidMessageError(
            f"headers must be a mapping of names to strings, got {type(headers).__name__}"
        )
    total = 0
    for name, value in headers.items():
        if not isinstance(name, str) or not name:
            raise InvalidMessageError(f"header names must be non-empty strings, got {name!r}")
        size = utf8_size(name, "a header name")
        if size > MAX_HEADER_NAME_BYTES:
            raise InvalidMessageError(
                f"header name {name[:40]!r}... is {size} UTF-8 bytes; the limit is "
                f"{MAX_HEADER_NAME_BYTES} (pamqp, the RabbitMQ codec, cuts longer names)"
            )
        if name[:6].lower() == h.PREFIX and name not in ALLOWED_RESERVED:
            raise InvalidMessageError(
                f"header {name!r}: names starting {h.PREFIX!r} are reserved for unimq's own "
                "bookkeeping (use the publish arguments key=, message_id=, delay= instead, or "
                "another name)"
            )
        if not isinstance(value, str):
            if isinstance(value, float) and not math.isfinite(value):
                raise InvalidMessageError(f"header {name!r} must be a finite number, got {value}")
            if not isinstance(value, (int, float, bool)):
                raise InvalidMessageError(
                    f"header {name!r} must be a string, got {type(value).__name__}"
                )
            value = str(value)
        total += size + utf8_size(value, f"the value of header {name!r}")
        wire[name] = value
    if total > MAX_HEADERS_BYTES:
        raise InvalidMessageError(
            f"headers total {total} UTF-8 bytes (names and values); the limit is "
            f"{MAX_HEADERS_BYTES} (what every backend carries; see docs/configuration.md, Limits)"
        )
    return wire


def delay_seconds(delay: Any) -> float:
    """``delay`` (a ``timedelta`` or seconds) as finite seconds in ``[0, MAX_DELAY]``."""
    if isinstance(delay, timedelta):
        seconds = delay.total_seconds()
    elif isinstance(delay, (int, float)) and not isinstance(delay, bool):
        seconds = float(delay)
    else:
        raise InvalidMessageError(f"delay must be a timedelta or seconds, got {delay!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidMessageError(f"delay must be a finite number >= 0 seconds, got {delay!r}")
    if seconds > MAX_DELAY:
        raise InvalidMessageError(
            f"delay of {seconds:g}s is longer than the {MAX_DELAY:g}s (10 years) unimq accepts"
        )
    return seconds


def deliver_at_timestamp(deliver_at: Any, now: float) -> float:
    """``deliver_at`` (an aware ``datetime``) as an epoch timestamp no later than
    ``now + MAX_DELAY``."""
    if not isinstance(deliver_at, datetime):
        raise InvalidMessageError(f"deliver_at must be a datetime, got {deliver_at!r}")
    if deliver_at.tzinfo is None or deliver_at.utcoffset() is None:
        raise InvalidMessageError(
            "deliver_at must be timezone-aware (e.g. datetime.now(timezone.utc) + ...); "
            "a naive datetime is ambiguous"
        )
    try:
        due = deliver_at.timestamp()
    except (OverflowError, ValueError, OSError):
        due = math.inf
    if not math.isfinite(due):
        raise InvalidMessageError(f"deliver_at {deliver_at!r} is out of range")
    if due - now > MAX_DELAY:
        raise InvalidMessageError(
            f"deliver_at {deliver_at.isoformat()} is more than {MAX_DELAY:g}s (10 years) away"
        )
    return due


#: What a publish puts on the wire: topic, payload, headers, key, message id, content type, due.
Prepared = tuple[str, bytes, dict[str, str], "str | None", str, str, "float | None"]


def prepare_publish(
    topic: Any,
    body: Any,
    key: Any,
    headers: Any,
    delay: Any,
    deliver_at: Any,
    message_id: Any,
    now: Callable[[], float],
    topic_checked: bool = False,
) -> Prepared:
    """Check every argument of a publish and build what goes on the wire, before anything is
    sent: ``Broker.publish``, ``publish_batch`` and an outbox publish (which must refuse exactly
    what a direct publish refuses, while the caller's transaction can still roll back) all use
    it. ``now`` is called once (the publish time, and the base of a delay); ``topic_checked``
    skips the topic check for a topic the caller has just seen pass it. Positional on purpose:
    it runs once per publish."""
    if not topic_checked:
        check_name(topic, "topic")
    user = user_headers(headers) if headers is not None else None
    if key is not None:
        check_name(key, "key", optional=True)
    if message_id is None:
        message_id = str(uuid_utils.uuid7())
    else:
        check_name(message_id, "message_id")
    due: float | None = None
    moment = now()  # also the publish time (unimq-published-at)
    if delay is not None or deliver_at is not None:
        if delay is not None and deliver_at is not None:
            raise ConfigurationError("give either delay or deliver_at, not both")
        if delay is not None:
            seconds = delay_seconds(delay)
            due = moment + seconds if seconds > 0 else None
        else:
            at = deliver_at_timestamp(deliver_at, moment)
            due = at if at > moment else None
    payload, content_type = encode(body)
    wire = envelope.published(user, message_id, content_type, moment)
    return topic, payload, wire, key, message_id, content_type, due
