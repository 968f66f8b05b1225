"""The checks an outbox publish makes before it writes a row: ``Broker.publish``'s own.

An outbox publish must refuse exactly what ``Broker.publish`` refuses, at the time of the
call: a row that the relay could not send later would be discovered only after the caller's
transaction committed, when nobody can roll it back. So it uses the core's publish checks
(:mod:`unimq.validation`, the same limits on every backend) in the same order, and the same
envelope for the wire headers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import uuid_utils

from unimq import envelope, validation
from unimq.codec import encode
from unimq.errors import ConfigurationError


class Checked(NamedTuple):
    payload: bytes
    content_type: str
    wire: dict[str, str]
    key: str | None
    message_id: str
    due: float | None


def check_publish(
    topic: Any,
    body: Any,
    *,
    key: Any,
    headers: Mapping[str, Any] | None,
    delay: Any,
    deliver_at: Any,
    message_id: Any,
    now: float,
) -> Checked:
    """The message as ``Broker.publish`` would put it on the wire (``due`` in epoch seconds),
    or the :class:`~unimq.errors.InvalidMessageError` / :class:`~unimq.errors.EncodeError` it
    would raise."""
    validation.check_name(topic, "topic")
    user = validation.user_headers(headers) if headers is not None else None
    if key is not None:
        validation.check_name(key, "key", optional=True)
    if message_id is None:
        message_id = str(uuid_utils.uuid7())
    else:
        validation.check_name(message_id, "message_id")
    due: float | None = None
    if delay is not None and deliver_at is not None:
        raise ConfigurationError("give either delay or deliver_at, not both")
    if delay is not None:
        seconds = validation.delay_seconds(delay)
        due = now + seconds if seconds > 0 else None
    elif deliver_at is not None:
        at = validation.deliver_at_timestamp(deliver_at, now)
        due = at if at > now else None
    payload, content_type = encode(body)
    wire = envelope.outgoing(user, message_id=message_id, content_type=content_type)
    return Checked(payload, content_type, wire, key, message_id, due)
