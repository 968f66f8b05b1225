"""``envelope.message``: the one map from a delivery's envelope to the :class:`Message` a
handler, a transaction checker or a requester sees (it had four hand-written copies; the
checker's and the requester's left ``published_at`` and ``due`` out)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from unimq import envelope
from unimq import headers as h
from unimq.message import Message

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
user_names = text.filter(lambda name: bool(name) and not name.startswith(h.PREFIX))


@dataclass
class Delivery:
    topic: str
    key: str | None
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@given(
    message_id=text.filter(bool),
    topic=text.filter(bool),
    key=st.none() | text,
    body=st.binary(max_size=16),
    user=st.dictionaries(user_names, text, max_size=3),
    attempt=st.integers(1, 50),
    content_type=st.none() | st.sampled_from(["application/json", "text/plain"]),
    published_ms=st.none() | st.integers(1, 2**41),
    due_ms=st.none() | st.integers(1, 2**41),
    group=text,
)
def test_every_envelope_field_reaches_the_message(
    message_id: str,
    topic: str,
    key: str | None,
    body: bytes,
    user: dict[str, str],
    attempt: int,
    content_type: str | None,
    published_ms: int | None,
    due_ms: int | None,
    group: str,
) -> None:
    wire = {**user, h.ID: message_id, h.ATTEMPT: str(attempt)}
    if content_type is not None:
        wire[h.CONTENT_TYPE] = content_type
    if published_ms is not None:
        wire[h.PUBLISHED_AT] = str(published_ms)
    if due_ms is not None:
        wire[h.DELIVER_AT] = str(due_ms)
    delivery = Delivery(topic, key, body, wire)
    env = envelope.read(delivery)
    message = envelope.message(delivery, env, group)
    assert isinstance(message, Message)
    assert (message.id, message.topic, message.key, message.body) == (
        message_id,
        topic,
        key,
        body,
    )
    assert (message.attempt, message.group, message.content_type) == (attempt, group, content_type)
    assert dict(message.headers) == user
    assert message.published_at == (None if published_ms is None else published_ms / 1000)
    assert message.due == (None if due_ms is None else due_ms / 1000)
