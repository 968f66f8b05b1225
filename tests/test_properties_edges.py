"""Property-based tests (hypothesis) of the edges: URLs, passwords, publish arguments, headers
and delays. The invariant: either a typed ``UnimqError`` before anything is sent (and no
password in any text it carries), or the message round-trips on memory:// intact.

Seeded and derandomized when ``CI=true``, so a CI failure replays locally with the same flag.
"""

from __future__ import annotations

import asyncio
import math
import os
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unimq import Broker, Message
from unimq.errors import ConfigurationError, UnimqError
from unimq.url import BrokerURL
from unimq.validation import MAX_DELAY, delay_seconds

CI = os.environ.get("CI", "").lower() == "true"
PROFILE = settings(
    max_examples=150,
    deadline=None,
    derandomize=CI,
    database=None,  # no example database written into the checkout
    suppress_health_check=[HealthCheck.too_slow],
)
SCHEMES = st.sampled_from(["amqp", "kafka", "rocketmq", "memory"])
# Printable ASCII plus the characters that broke masking or parsing before, and some Unicode.
NASTY = st.text(
    alphabet=st.sampled_from(
        [*"abcXYZ019 @/?#:%&=;,[]\\'\"\t\n", "\uff20", "\uff1a", "\u00b2", "é", "\u2028"]
    ),
    max_size=12,
)


def reachable_text(error: BaseException) -> str:
    texts: list[str] = []
    seen: set[int] = set()
    stack: list[BaseException | None] = [error]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        texts += [str(item), repr(item), *(repr(a) for a in item.args)]
        texts.append(repr(getattr(item, "object", "")))
        stack += [item.__cause__, item.__context__]
    return "\n".join(texts)


@PROFILE
@given(scheme=SCHEMES, password=NASTY, port=st.integers(1, 65535), path=NASTY)
def test_passwords_never_show(scheme: str, password: str, port: int, path: str) -> None:
    secret = f"Zq{password}Xw"
    raw = f"{scheme}://user:{secret}@h-1.example:{port}/{path.replace('@', '')}"
    try:
        broker = Broker(raw)
    except UnimqError as error:
        text = reachable_text(error)
    else:
        url = broker.url
        parsed = url.password.get_secret_value() if url.password else ""
        text = " ".join([str(url), repr(url), repr(broker), url.mask(f"client: {parsed}")])
    assert "Zq" not in text and "Xw" not in text, text


@PROFILE
@given(scheme=SCHEMES, rest=st.text(max_size=40))
def test_any_url_parses_or_raises_a_typed_error(scheme: str, rest: str) -> None:
    try:
        BrokerURL.parse(f"{scheme}://{rest}")
    except UnimqError:
        pass


@PROFILE
@given(rest=st.text(max_size=40))
def test_any_url_makes_a_broker_or_a_typed_error(rest: str) -> None:
    for scheme in ("amqp", "kafka", "rocketmq", "memory"):
        try:
            Broker(f"{scheme}://{rest}")
        except UnimqError:
            pass


@PROFILE
@given(
    delay=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-(10**12), 10**12),
        st.timedeltas(),
    )
)
def test_delays_are_finite_and_bounded_or_refused(delay: Any) -> None:
    try:
        seconds = delay_seconds(delay)
    except ConfigurationError:
        return
    assert math.isfinite(seconds) and 0 <= seconds <= MAX_DELAY
    expected = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
    assert seconds == expected


TEXT = st.text(max_size=40)  # includes lone surrogates, NUL, every plane
NAME = st.one_of(TEXT, st.sampled_from(["unimq-id", "unimq-key", "unimq-dlq-reason", "x-a"]))
HEADERS = st.dictionaries(
    NAME, st.one_of(TEXT, st.integers(), st.floats(), st.booleans()), max_size=4
)
ALLOWED = {
    "unimq-dlq-reason", "unimq-error-type", "unimq-error-message", "unimq-original-topic",
    "unimq-original-group", "unimq-attempts", "unimq-failed-at", "unimq-replayed-at",
}  # fmt: skip
LONG = st.one_of(TEXT, st.text(min_size=250, max_size=260), st.just("é" * 128))


def utf8(text: str) -> int | None:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None


def valid(key: str | None, headers: dict[str, Any], message_id: str | None) -> bool:
    """The documented limits (docs/configuration.md, "Limits"), written independently."""
    for text, low in ((key, 0), (message_id, 1)):
        if text is None:
            continue
        size = utf8(text)
        if size is None or not low <= size <= 255:
            return False
    total = 0
    for name, value in headers.items():
        size = utf8(name)
        if size is None or not 1 <= size <= 128:
            return False
        if name.lower().startswith("unimq-") and name not in ALLOWED:
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        value_size = utf8(value if isinstance(value, str) else str(value))
        if value_size is None:
            return False
        total += size + value_size
    return total <= 32 * 1024


async def publish_and_receive(
    key: str | None, headers: dict[str, Any], message_id: str | None
) -> None:
    broker = Broker("memory://")
    seen: list[Message] = []
    sent: list[Any] = []
    transport: Any = broker.transport
    original = transport.publish

    async def recording(message: Any) -> None:
        sent.append(message)
        await original(message)

    transport.publish = recording

    @broker.subscriber("t", group="g")
    async def handle(message: Message) -> None:
        seen.append(message)

    async with broker:
        try:
            receipt = await broker.publish(
                "t", b"body", key=key, headers=headers, message_id=message_id
            )
        except UnimqError:
            assert sent == []  # refused before anything was sent
            assert not valid(key, headers, message_id)
            return
        assert valid(key, headers, message_id)
        await broker.drain(timeout=5)
    (message,) = seen
    assert message.id == receipt.message_id and message.body == b"body"
    if message_id is not None:
        assert message.id == message_id
    assert message.key == key
    for name, value in headers.items():
        assert message.headers[name] == (value if isinstance(value, str) else str(value))


@settings(PROFILE, max_examples=120)
@given(key=st.one_of(st.none(), LONG), headers=HEADERS, message_id=st.one_of(st.none(), LONG))
def test_publish_refuses_before_sending_or_round_trips(
    key: str | None, headers: dict[str, Any], message_id: str | None
) -> None:
    asyncio.run(publish_and_receive(key, headers, message_id))
