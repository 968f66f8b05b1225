"""The envelope: the one map between unimq's reserved headers and a message's bookkeeping.

A message on the wire carries its identity in ``unimq-*`` headers (docs/semantics.md,
"Reserved headers"): its id, its attempt number, the logical topic (on a retry topic), its
content type, when it was published, the time it is due and, for a request, where its reply
goes. Everything that
writes or reads those headers goes through this module — ``Broker.publish`` and
``Broker.request``, the retry, re-hop, dead-letter and reply copies of the delivery pipeline,
and the ``unimq dlq`` tools — so a new bookkeeping header, or a change of its format, is made
here once.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import NamedTuple

from . import headers as h
from .message import Message, Settler
from .transport import Delivery

#: A dead letter's ``unimq-error-message`` is cut to this many characters.
MAX_ERROR_MESSAGE = 1000


class Envelope(NamedTuple):
    """What the reserved headers of one delivery say (read with :func:`read`).

    ``headers`` are the publisher's own headers (bookkeeping removed; the dead-letter
    diagnostics of a dead-letter copy stay); ``due`` is the epoch time in seconds before which
    the message must not be handled, or ``None``. ``reply_to`` / ``correlation_id`` are set
    when the message is a request (``Broker.request``): where the reply goes, and its match.
    ``published_at`` (epoch seconds) is when the application published it (``unimq-published-at``,
    kept by retry copies), else the broker's own timestamp of the delivery where it has one
    (:class:`~unimq.transport.SupportsTimestamp`), else ``None``.
    """

    id: str
    topic: str
    attempt: int
    content_type: str | None
    due: float | None
    headers: dict[str, str]
    reply_to: str | None = None
    correlation_id: str | None = None
    published_at: float | None = None


def read(delivery: Delivery) -> Envelope:
    """The envelope of a delivery, with the fallbacks for messages that other clients published
    (no unimq headers; docs/semantics.md): the broker's own id, the physical topic."""
    raw = delivery.headers
    get = raw.get
    message_id = get(_ID)
    attempt_text = get(_ATTEMPT)
    content_type = get(_CONTENT_TYPE)
    published_text = get(_PUBLISHED_AT)
    if len(raw) == 4 and message_id and attempt_text and content_type and published_text:
        # A plain publish without headers (nearly every delivery): these four are all there
        # is, so there is no due time, logical topic, request or user header to look for.
        # Runs once per delivery: tuple.__new__ skips NamedTuple's Python-level constructor.
        # Messages published in the same millisecond (a publish_batch, a burst) share the
        # stamp: the last one parsed is kept (a str compare instead of an int parse).
        last_text, published_at = _last_stamp
        if published_text != last_text:
            published_at = published_stamp(published_text)
        return _make(
            Envelope,
            (
                message_id,
                delivery.topic,
                1 if attempt_text == "1" else parse_attempt(attempt_text),
                content_type,
                None,
                {},
                None,
                None,
                published_at,
            ),
        )
    due_text = get(_DELIVER_AT)
    topic = get(_TOPIC)
    user = {k: v for k, v in raw.items() if k not in _BOOKKEEPING}
    return _make(
        Envelope,
        (
            message_id or delivery.native_id,
            topic or delivery.topic,
            1 if attempt_text is None or attempt_text == "1" else parse_attempt(attempt_text),
            content_type,
            None if due_text is None else parse_due(due_text),
            user,
            get(_REPLY_TO),  # a request (Broker.request) has both
            get(_CORRELATION_ID),
            parse_due(published_text) if published_text is not None else _broker_time(delivery),
        ),
    )


def published_stamp(text: str) -> float | None:
    """``unimq-published-at`` of a plain delivery (``read``'s fast path, and the batch admission
    loop's, ``delivery.batching.admit_ready``) in epoch seconds; kept as the last stamp read, so
    the deliveries of one burst (published in the same millisecond) parse it once."""
    global _last_stamp
    try:
        published_at: float | None = int(text) / 1000
    except ValueError:
        published_at = None  # as parse_due says of it
    _last_stamp = (text, published_at)
    return published_at


def last_stamp() -> tuple[str, float | None]:
    """The last ``unimq-published-at`` text :func:`published_stamp` parsed, and its value."""
    return _last_stamp


def message(
    delivery: Delivery, env: Envelope, group: str, settler: Settler | None = None
) -> Message:
    """The :class:`Message` a handler (or a checker, or a requester) sees for ``delivery``,
    whose envelope is ``env``: the one map from an envelope to a message's attributes. (The
    batch admission loop inlines this call on purpose: it runs once per message there.)"""
    # Positional: this runs once per delivery, and keyword parsing is measurable here.
    return Message(
        env.id,
        env.topic,
        delivery.key,
        delivery.body,
        env.headers,
        env.attempt,
        group,
        env.content_type,
        settler,
        env.published_at,
        env.due,
    )


def _broker_time(delivery: Delivery) -> float | None:
    """The broker's own timestamp of a delivery without ``unimq-published-at`` (a message from
    another client, or from an older unimq); ``None`` where the transport has none."""
    return getattr(delivery, "timestamp", None)


_make = tuple.__new__
_last_stamp: tuple[str, float | None] = ("", None)  # the last unimq-published-at read
_BOOKKEEPING = h.BOOKKEEPING
# Module constants rather than attribute look-ups on ``headers`` in the per-delivery path.
_ID, _ATTEMPT, _CONTENT_TYPE, _PUBLISHED_AT = h.ID, h.ATTEMPT, h.CONTENT_TYPE, h.PUBLISHED_AT
#: The headers of a *plain* delivery, in ``read``'s order: a delivery whose headers are exactly
#: these four, none of them empty (what ``published`` writes for a publish without headers), has
#: no due time, logical topic, request or user header. ``read`` takes a short cut for it, and so
#: does the batch admission loop, which builds its messages from them without an Envelope.
PLAIN = (_ID, _ATTEMPT, _CONTENT_TYPE, _PUBLISHED_AT)
_DELIVER_AT, _TOPIC = h.DELIVER_AT, h.TOPIC
_REPLY_TO, _CORRELATION_ID = h.REPLY_TO, h.CORRELATION_ID


def parse_attempt(text: str | None) -> int:
    """``unimq-attempt`` as a number >= 1; garbage from a foreign client counts as 1."""
    try:
        return max(1, int(text)) if text is not None else 1
    except (TypeError, ValueError):
        return 1


def parse_due(text: str | None) -> float | None:
    """``unimq-deliver-at`` (epoch milliseconds) in epoch seconds; unreadable means not delayed."""
    if text is None:
        return None
    try:
        return int(text) / 1000
    except (TypeError, ValueError):
        return None


def outgoing(
    headers: Mapping[str, str] | None,
    *,
    message_id: str,
    attempt: int = 1,
    content_type: str | None = None,
    topic: str | None = None,
    due: float | None = None,
    reply_to: str | None = None,
    correlation_id: str | None = None,
    published_at: float | None = None,
) -> dict[str, str]:
    """The headers to put on the wire: the user's ``headers`` plus the bookkeeping.

    ``topic`` is the logical topic, written only for copies that travel on another topic (a
    retry topic); ``due`` (epoch seconds) marks a delayed message; ``reply_to`` and
    ``correlation_id`` make it a request (or, ``correlation_id`` alone, a reply);
    ``published_at`` (epoch seconds) is the original publish time a copy keeps.
    """
    wire = {k: v for k, v in headers.items() if k not in h.BOOKKEEPING} if headers else {}
    wire[h.ID] = message_id
    wire[h.ATTEMPT] = str(attempt)
    if content_type is not None:
        wire[h.CONTENT_TYPE] = content_type
    if topic is not None:
        wire[h.TOPIC] = topic
    if due is not None:
        wire[h.DELIVER_AT] = str(int(due * 1000))
    if reply_to is not None:
        wire[h.REPLY_TO] = reply_to
    if correlation_id is not None:
        wire[h.CORRELATION_ID] = correlation_id
    if published_at is not None:
        wire[h.PUBLISHED_AT] = str(int(published_at * 1000))
    return wire


def ask_reply(wire: dict[str, str], *, reply_to: str, correlation_id: str) -> dict[str, str]:
    """Turn the wire headers of a publish into a request: the reply goes to ``reply_to``."""
    wire[h.REPLY_TO] = reply_to
    wire[h.CORRELATION_ID] = correlation_id
    return wire


def reply(*, message_id: str, content_type: str, correlation_id: str) -> dict[str, str]:
    """The wire headers of a reply: a fresh message id and the request's correlation id."""
    return outgoing(
        None, message_id=message_id, content_type=content_type, correlation_id=correlation_id
    )


def published(
    headers: dict[str, str] | None, message_id: str, content_type: str, published_at: float
) -> dict[str, str]:
    """The headers of a message as ``Broker.publish`` sends it (attempt 1): ``outgoing`` for the
    path of every publish, without its keyword and copy costs. ``headers`` is a dict the caller
    hands over (already checked: no bookkeeping names in it); ``published_at`` is now, in epoch
    seconds (the delivery delay is measured from it)."""
    wire = headers if headers else {}
    wire[h.ID] = message_id
    wire[h.ATTEMPT] = "1"
    wire[h.CONTENT_TYPE] = content_type
    wire[h.PUBLISHED_AT] = str(int(published_at * 1000))
    return wire


def retry_copy(envelope: Envelope, *, attempt: int, due: float | None) -> dict[str, str]:
    """A retry or re-hop copy: same id and headers, on the group's retry topic (a request
    stays a request: the attempt that succeeds replies)."""
    return outgoing(
        envelope.headers,
        message_id=envelope.id,
        attempt=attempt,
        content_type=envelope.content_type,
        topic=envelope.topic,
        due=due,
        reply_to=envelope.reply_to,
        correlation_id=envelope.correlation_id,
        published_at=envelope.published_at,
    )


def dead_letter_copy(
    envelope: Envelope,
    *,
    reason: str,
    error_type: str,
    detail: str,
    group: str,
    failed_at: float,
) -> dict[str, str]:
    """A dead-letter copy: the original's id and headers plus the diagnostics of section 1."""
    wire = outgoing(
        envelope.headers,
        message_id=envelope.id,
        content_type=envelope.content_type,
        published_at=failed_at,  # published to the DLQ topic now
    )
    wire[h.DLQ_REASON] = reason
    wire[h.ERROR_TYPE] = encodable(error_type)
    wire[h.ERROR_MESSAGE] = encodable(detail[:MAX_ERROR_MESSAGE])
    wire[h.ORIGINAL_TOPIC] = envelope.topic
    wire[h.ORIGINAL_GROUP] = group
    wire[h.ATTEMPTS] = str(envelope.attempt)
    wire[h.FAILED_AT] = iso_utc(failed_at)
    return wire


def user_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The publisher's own headers of a dead letter: no bookkeeping, no diagnostics."""
    return {
        k: v
        for k, v in headers.items()
        if k not in h.BOOKKEEPING and k not in h.DLQ_DIAGNOSTICS and k != h.REPLAYED_AT
    }


def replay_copy(headers: Mapping[str, str], *, message_id: str, replayed_at: str) -> dict[str, str]:
    """A dead letter published back to its topic: the publisher's headers, attempt 1 again,
    no diagnostics, and ``unimq-replayed-at``."""
    wire = outgoing(
        user_headers(headers), message_id=message_id, content_type=headers.get(h.CONTENT_TYPE)
    )
    wire[h.REPLAYED_AT] = replayed_at
    return wire


def encodable(value: str) -> str:
    """A diagnostic as a header can carry it: an exception's text may hold lone surrogates,
    which no broker can encode, and the dead letter must never fail for its diagnostics."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace").decode("utf-8")


def iso_utc(epoch_seconds: float) -> str:
    """ISO-8601 UTC with a ``Z``, as ``unimq-failed-at`` is written."""
    return datetime.fromtimestamp(epoch_seconds, tz=timezone.utc).isoformat().replace("+00:00", "Z")
