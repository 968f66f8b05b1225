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

from unimq import validation


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
    would raise: the very checks of ``Broker.publish`` (``validation.prepare_publish``)."""
    _, payload, wire, key, message_id, content_type, due = validation.prepare_publish(
        topic, body, key, headers, delay, deliver_at, message_id, lambda: now
    )
    return Checked(payload, content_type, wire, key, message_id, due)
