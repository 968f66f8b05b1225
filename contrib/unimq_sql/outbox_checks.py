"""The checks an outbox publish makes before it writes a row.

An outbox publish must refuse exactly what ``Broker.publish`` refuses, at the time of the
call: a row that the relay could not send later would be discovered only after the caller's
transaction committed, when nobody can roll it back. These checks mirror ``Broker.publish``
and live in this one function so that they can be replaced by the core's shared publish
validation when it exists.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, NamedTuple

import uuid_utils

from unimq import headers as h
from unimq.codec import encode
from unimq.errors import ConfigurationError

MAX_NAME_LENGTH = 255


class Checked(NamedTuple):
    payload: bytes
    content_type: str
    headers: dict[str, str]
    key: str | None
    message_id: str
    delay: float


def check_publish(
    topic: Any,
    body: Any,
    *,
    key: Any,
    headers: Mapping[str, Any] | None,
    delay: Any,
    message_id: Any,
) -> Checked:
    """The encoded publish, or a :class:`~unimq.errors.ConfigurationError` /
    :class:`~unimq.errors.EncodeError` naming the bad argument."""
    _check_name(topic, "topic")
    payload, content_type = encode(body)
    wire: dict[str, str] = {}
    if headers is not None:
        if not isinstance(headers, Mapping):
            raise ConfigurationError(
                f"headers must be a mapping of names to strings, got {type(headers).__name__}"
            )
        for name, value in headers.items():
            if not isinstance(name, str) or not name:
                raise ConfigurationError(f"header names must be non-empty strings, got {name!r}")
            if name in h.BOOKKEEPING:
                continue  # unimq's own bookkeeping is set by the outbox, as by Broker.publish
            if not isinstance(value, str):
                if isinstance(value, (int, float, bool)):
                    value = str(value)
                else:
                    raise ConfigurationError(
                        f"header {name!r} must be a string, got {type(value).__name__}"
                    )
            wire[name] = value
    if key is not None:
        if not isinstance(key, str):
            raise ConfigurationError(f"key must be a string or None, got {type(key).__name__}")
        if len(key) > MAX_NAME_LENGTH:
            raise ConfigurationError(f"key must be at most {MAX_NAME_LENGTH} characters")
    if message_id is None:
        message_id = str(uuid_utils.uuid7())
    else:
        _check_name(message_id, "message_id")
    seconds = 0.0
    if delay is not None:
        if isinstance(delay, timedelta):
            seconds = delay.total_seconds()
        elif isinstance(delay, (int, float)) and not isinstance(delay, bool):
            seconds = float(delay)
        else:
            raise ConfigurationError(f"delay must be a timedelta or seconds, got {delay!r}")
        if not math.isfinite(seconds) or seconds < 0:
            raise ConfigurationError(f"delay must be a finite number >= 0, got {delay!r}")
    return Checked(payload, content_type, wire, key, message_id, seconds)


def _check_name(value: Any, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > MAX_NAME_LENGTH:
        raise ConfigurationError(f"{what} must be at most {MAX_NAME_LENGTH} characters")
