"""The batch admission loop (``delivery.batching.admit_ready``) builds a plain delivery's
``Message`` straight from its four headers, without an ``Envelope`` and without
``Message.__init__``, and reads nothing but the delay for a handler of bodies. These tests hold
it equal to the general way (``envelope.read`` then ``envelope.message``), attribute by
attribute, for plain deliveries and every other kind, and check that it stops where the general
way must take over."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unimq import BatchPolicy, Broker, envelope
from unimq import headers as h
from unimq.codec import DecodeError
from unimq.delivery.batch_settle import Batch
from unimq.delivery.batching import admit_ready
from unimq.memory.transport import MemorySubscription
from unimq.message import Message

GROUP = "g"


@dataclass(eq=False)
class Delivery:
    topic: str
    key: str | None
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    native_id: str = "native-1"
    revoked: bool = False


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)
numbers = st.integers(0, 2**41).map(str)
# What a header of each kind may hold on the wire: the usual values, and what another client
# (or a damaged message) may send: empty, garbage, negative, zero.
ids = st.sampled_from(["0193-a", "0193-b"]) | text
attempts = st.sampled_from(["1", "1", "2", "17"]) | st.sampled_from(["0", "-3", "x", ""]) | text
types = st.sampled_from(["application/json", "application/octet-stream", ""]) | text
stamps = st.sampled_from(["1764680000123", "1764680000124", "oops", ""]) | numbers
dues = numbers | st.sampled_from(["", "later"])
user_names = text.filter(lambda name: bool(name) and not name.startswith(h.PREFIX))


@st.composite
def wire_headers(draw: st.DrawFn) -> dict[str, str]:
    """Plain headers most of the time; else any mix of reserved and user headers."""
    if draw(st.booleans()):
        return {
            h.ID: draw(ids),
            h.ATTEMPT: draw(attempts),
            h.CONTENT_TYPE: draw(types),
            h.PUBLISHED_AT: draw(stamps),
        }
    wire: dict[str, str] = draw(st.dictionaries(user_names, text, max_size=2))
    for name, values in (
        (h.ID, ids),
        (h.ATTEMPT, attempts),
        (h.CONTENT_TYPE, types),
        (h.PUBLISHED_AT, stamps),
        (h.DELIVER_AT, dues),
        (h.TOPIC, text),
        (h.REPLY_TO, text),
        (h.CORRELATION_ID, text),
    ):
        if draw(st.booleans()):
            wire[name] = draw(values)
    return wire


deliveries = st.builds(
    Delivery,
    topic=st.sampled_from(["orders", "t.retry"]),
    key=st.none() | text,
    body=st.sampled_from([b"1", b"22", b"x", b"{}"]),
    headers=wire_headers(),
)


def fields(message: Message) -> dict[str, Any]:
    """Every attribute a Message has (an unset slot raises here, as it would for a handler)."""
    return {name: getattr(message, name) for name in Message.__slots__}


def admitted_the_general_way(
    items: list[Delivery | None], max_size: int, revocable: bool, decode: Any
) -> int:
    """How many of ``items`` the one-loop admission admits (the rule it had before the fast
    path, which ``Batches._admit`` completes): up to the first stop signal, revoked delivery,
    delivery still due later, or body that does not decode."""
    count = 0
    for item in items[:max_size]:
        if item is None or (revocable and item.revoked):
            break
        if envelope.read(item).due is not None:
            break
        if decode is not None:
            try:
                decode(item.body)
            except DecodeError:
                break
        count += 1
    return count


def decode_digits(body: bytes) -> int:
    if not body.isdigit():
        raise DecodeError("not a number")
    return int(body)


@settings(max_examples=400)
@given(
    items=st.lists(deliveries | st.none(), max_size=8),
    max_size=st.integers(1, 9),
    revoked=st.sets(st.integers(0, 7), max_size=2),
    decoder=st.sampled_from(["none", "bytes", "digits"]),
)
def test_a_batch_of_messages_gets_what_read_and_message_give(
    items: list[Delivery | None], max_size: int, revoked: set[int], decoder: str
) -> None:
    for index in revoked:
        if index < len(items) and items[index] is not None:
            items[index].revoked = True  # type: ignore[union-attr]
    decode = decode_digits if decoder == "digits" else None
    batch = Batch(None, True, decoder != "none")  # type: ignore[arg-type]
    waiting: deque[Any] = deque(items)
    admit_ready(waiting, batch, max_size, GROUP, True, decode)

    count = admitted_the_general_way(items, max_size, True, decode)
    assert batch.deliveries == items[:count]
    assert list(waiting) == items[count:]
    assert batch.messages is not None and len(batch.messages) == count
    for delivery, message in zip(items[:count], batch.messages, strict=True):
        assert delivery is not None
        expected = envelope.message(delivery, envelope.read(delivery), GROUP, batch)
        assert type(message) is Message
        assert fields(message) == fields(expected)
        assert repr(message) == repr(expected)
    if decoder != "none":
        assert (
            batch.bodies
            == [
                (decode or (lambda body: body))(d.body)  # type: ignore[union-attr]
                for d in items[:count]
            ]
        )


@settings(max_examples=300)
@given(
    items=st.lists(deliveries | st.none(), max_size=8),
    max_size=st.integers(1, 9),
    decoder=st.sampled_from(["bytes", "digits"]),
)
def test_a_batch_of_bodies_admits_what_the_general_way_admits(
    items: list[Delivery | None], max_size: int, decoder: str
) -> None:
    """A handler of bodies reads only the delay: it may stop earlier than the general rule,
    but only at a delivery with ``unimq-deliver-at`` (which ``_admit`` then reads in full)."""
    decode = decode_digits if decoder == "digits" else None
    batch = Batch(None, False, True)  # type: ignore[arg-type]
    waiting: deque[Any] = deque(items)
    admit_ready(waiting, batch, max_size, GROUP, False, decode)

    count = len(batch.deliveries)
    general = admitted_the_general_way(items, max_size, False, decode)
    assert batch.deliveries == items[:count] and list(waiting) == items[count:]
    assert count == general or (
        count < general and h.DELIVER_AT in items[count].headers  # type: ignore[union-attr]
    )
    assert batch.messages is None
    assert batch.bodies == [(decode or (lambda body: body))(d.body) for d in items[:count]]  # type: ignore[union-attr]


def test_plain_messages_parse_each_published_stamp_of_a_run() -> None:
    """Consecutive deliveries of one millisecond share the parse; a new stamp is parsed."""
    stamps = ["1000", "1000", "2000", "oops", "3000", "3000"]
    items = [
        Delivery(
            "t",
            None,
            b"",
            {h.ID: f"m{i}", h.ATTEMPT: "1", h.CONTENT_TYPE: "x", h.PUBLISHED_AT: stamp},
        )
        for i, stamp in enumerate(stamps)
    ]
    batch = Batch(None, True, False)  # type: ignore[arg-type]
    admit_ready(deque(items), batch, 10, GROUP, False, None)
    assert batch.messages is not None
    assert [m.published_at for m in batch.messages] == [1.0, 1.0, 2.0, None, 3.0, 3.0]
    assert [m.headers for m in batch.messages] == [{}] * 6
    assert len({id(m.headers) for m in batch.messages}) == 6  # each message its own dict


async def test_a_subscription_that_never_waits_is_read_about_one_batch_ahead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """memory:// hands over whatever is queued without waiting: the batch receiver lets the
    collectors take each batch's worth before it reads on, instead of reading ``max_size x
    concurrency`` deliveries ahead in one go (kept alive, they cost the garbage collector)."""
    handed = 0
    original = MemorySubscription.receive_many

    async def counting(self: MemorySubscription, max_n: int) -> list[Any]:
        nonlocal handed
        deliveries = await original(self, max_n)
        handed += len(deliveries)
        return deliveries

    monkeypatch.setattr(MemorySubscription, "receive_many", counting)
    broker = Broker("memory://")
    seen = 0
    ahead: list[int] = []

    @broker.subscriber(
        "t", group="g", batch=BatchPolicy(max_size=10, max_wait=0.05), concurrency=16
    )
    async def handle(items: list[bytes]) -> None:
        nonlocal seen
        seen += len(items)
        ahead.append(handed - seen)  # received, not yet handed to this handler

    async with broker:
        await broker.publish_batch("t", [b"x"] * 1000)
        await broker.drain(timeout=10)
    assert seen == 1000
    assert max(ahead) <= 2 * 10  # before: 150 (16 batches' room, less the one running)


async def test_batches_still_run_concurrently_when_reading_one_batch_ahead() -> None:
    """Reading about one batch ahead does not cost concurrency: handlers that wait still run
    ``concurrency`` batches at once. (The last may be a slot short: the idle retry receiver
    holds one slot of room while it waits, as before.)"""
    broker = Broker("memory://")
    running = 0
    most = 0
    sizes: list[int] = []
    release = asyncio.Event()

    @broker.subscriber("t", group="g", batch=BatchPolicy(max_size=10, max_wait=0.05), concurrency=4)
    async def handle(items: list[bytes]) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        sizes.append(len(items))
        if most == 4:
            release.set()
        await release.wait()
        running -= 1

    async with broker:
        await broker.publish_batch("t", [b"x"] * 100)
        await asyncio.wait_for(release.wait(), 5)
        await broker.drain(timeout=10)
    assert most == 4 and sum(sizes) == 100 and sizes[:3] == [10, 10, 10]
