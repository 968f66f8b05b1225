"""``publish_batch`` of plain bodies: what is the same for every item is checked once.

``validation.prepare_publish`` checks a publish's topic, key and headers and builds its wire
headers; a batch of bodies shares the topic, the key and the headers, so checking them once
per item was most of what a large ``publish_batch`` cost before anything reached the client.
Here they are checked once, and each item only gets its body encoded and its own id. The
batch is published at one moment: every item carries the same ``unimq-published-at``.
The result is exactly what ``prepare_publish`` returns for each item, so nothing downstream
can tell the difference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import uuid_utils

from . import headers as h
from .codec import encode
from .errors import UnimqError
from .validation import Prepared, check_name, user_headers


def prepare_bodies(
    topic: Any,
    bodies: Sequence[Any],
    key: Any,
    headers: Any,
    now: Callable[[], float],
    topic_checked: bool,
    first_index: int = 0,
) -> list[Prepared]:
    """One :data:`~unimq.validation.Prepared` per body (attempt 1, not delayed). An item that
    cannot be encoded raises with its index (``first_index`` + its position) in the message."""
    try:
        if not topic_checked:
            check_name(topic, "topic")
        user = user_headers(headers) if headers is not None else {}
        if key is not None:
            check_name(key, "key", optional=True)
    except UnimqError as exc:  # what a per-item check would have said of the first item
        exc.args = (f"item {first_index}: {exc}", *exc.args[1:])
        raise
    stamp = str(int(now() * 1000))
    # One template per content type (a batch of bytes has one): the user's headers first, then
    # the bookkeeping in the order envelope.published writes it.
    templates: dict[str, dict[str, str]] = {}
    uuid7 = uuid_utils.uuid7
    ID, ATTEMPT, CONTENT_TYPE, PUBLISHED_AT = h.ID, h.ATTEMPT, h.CONTENT_TYPE, h.PUBLISHED_AT
    prepared: list[Prepared] = []
    append = prepared.append
    for index, body in enumerate(bodies):
        if type(body) is bytes:  # the common case, as encode() answers it
            payload, content_type = body, h.BINARY
        else:
            try:
                payload, content_type = encode(body)
            except UnimqError as exc:
                exc.args = (f"item {first_index + index}: {exc}", *exc.args[1:])
                raise
        template = templates.get(content_type)
        if template is None:
            template = templates[content_type] = {
                **user,
                ID: "",
                ATTEMPT: "1",
                CONTENT_TYPE: content_type,
                PUBLISHED_AT: stamp,
            }
        message_id = str(uuid7())
        wire = template.copy()
        wire[ID] = message_id
        append((topic, payload, wire, key, message_id, content_type, None))
    return prepared
