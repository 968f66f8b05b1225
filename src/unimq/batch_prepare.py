"""``publish_batch`` of plain bodies: what is the same for every item is checked once.

``validation.prepare_publish`` checks a publish's topic, key and headers and builds its wire
headers; a batch of bodies shares the topic, the key and the headers, so checking them once
per item was most of what a large ``publish_batch`` cost before anything reached the client.
Here they are checked once, and each item only gets its body encoded and its own id. The
batch is published at one moment: every item carries the same ``unimq-published-at``.
The result is exactly what ``prepare_publish`` returns for each item, so nothing downstream
can tell the difference.

With ``columns=True`` (the publisher's transport takes :class:`BodyBatch`, see
``Publisher.takes_columns``) a batch of one content type (all bytes, all text, all JSON) is
kept as columns instead: the bodies, the ids, and one headers template. The transport builds
its wire headers once and swaps in each item's id, and no ``dict`` or tuple per item is kept
alive (for the collector to scan again and again) while the batch waits for the broker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

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
    columns: bool = False,
    kinds: set[type] | None = None,
) -> list[Prepared] | BodyBatch:
    """One :data:`~unimq.validation.Prepared` per body (attempt 1, not delayed). An item that
    cannot be encoded raises with its index (``first_index`` + its position) in the message.
    ``columns``: a :class:`BodyBatch` when every body has the same content type; ``kinds``,
    the bodies' types if the caller has them (``publish_batch`` does)."""
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
    if columns:
        if kinds is None:
            kinds = set(map(type, bodies))
        batch = _body_batch(topic, bodies, key, user, stamp, first_index, kinds)
        if batch is not None:
            return batch
    # One template per content type (a batch of bytes has one).
    templates: dict[str, dict[str, str]] = {}
    uuid7 = uuid_utils.uuid7
    ID = h.ID
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
            template = templates[content_type] = _template(user, content_type, stamp)
        message_id = str(uuid7())
        wire = template.copy()
        wire[ID] = message_id
        append((topic, payload, wire, key, message_id, content_type, None))
    return prepared


def _template(user: dict[str, str], content_type: str, stamp: str) -> dict[str, str]:
    """The headers of every item of one content type, as ``prepare_publish`` writes them: the
    user's first, then the bookkeeping in the order ``envelope.published`` writes it. The
    ``unimq-id`` value is a placeholder: each item gets its own."""
    return {
        **user,
        h.ID: "",
        h.ATTEMPT: "1",
        h.CONTENT_TYPE: content_type,
        h.PUBLISHED_AT: stamp,
    }


def _body_batch(
    topic: str,
    bodies: Sequence[Any],
    key: str | None,
    user: dict[str, str],
    stamp: str,
    first_index: int,
    kinds: set[type],
) -> BodyBatch | None:
    """``bodies`` as a :class:`BodyBatch`, or ``None`` when they have more than one content
    type (the caller then builds the items one by one). ``kinds`` is the set of the bodies'
    types (made in C): bytes alone need no per-item look at all."""
    if kinds == {bytes}:  # the common case: nothing to encode
        payloads, content_type = list(bodies), h.BINARY
    else:
        payloads = []
        content_type = ""
        for index, body in enumerate(bodies):
            try:
                payload, kind = encode(body)
            except UnimqError as exc:
                exc.args = (f"item {first_index + index}: {exc}", *exc.args[1:])
                raise
            if kind != content_type:
                if content_type:
                    return None  # mixed content types: one template each, the general way
                content_type = kind
            payloads.append(payload)
        if not payloads:
            return None
    headers = _template(user, content_type, stamp)
    uuid7 = uuid_utils.uuid7
    ids = [str(uuid7()) for _ in payloads]
    return BodyBatch(topic, payloads, key, headers, ids, content_type)


class BodyBatch(Sequence[Prepared]):
    """A batch of plain bodies as columns: item ``i`` is ``bodies[i]`` with ``headers``, whose
    ``unimq-id`` is ``ids[i]``. Read as a sequence it is exactly the :data:`Prepared` items
    :func:`prepare_bodies` builds without ``columns`` (a new headers ``dict`` per read), so a
    publisher whose transport cannot take the columns sends the same records."""

    __slots__ = ("bodies", "content_type", "headers", "ids", "key", "topic")

    def __init__(
        self,
        topic: str,
        bodies: list[bytes],
        key: str | None,
        headers: dict[str, str],
        ids: list[str],
        content_type: str,
    ) -> None:
        self.topic = topic
        self.bodies = bodies
        self.key = key
        self.headers = headers
        self.ids = ids
        self.content_type = content_type

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, index: int) -> Prepared: ...

    @overload
    def __getitem__(self, index: slice) -> list[Prepared]: ...

    def __getitem__(self, index: int | slice) -> Prepared | list[Prepared]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self.ids)))]
        message_id = self.ids[index]
        wire = self.headers.copy()
        wire[h.ID] = message_id
        return (
            self.topic,
            self.bodies[index],
            wire,
            self.key,
            message_id,
            self.content_type,
            None,
        )

    def __iter__(self) -> Iterator[Prepared]:
        return (self[i] for i in range(len(self.ids)))
