"""Publish arguments are checked before anything is sent: a typed error, never a half-sent
message, a bare ValueError or invalid JSON on the wire."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from unimq import Broker, ConfigurationError, Message
from unimq.errors import EncodeError, UnimqError
from unimq.headers import DLQ_DIAGNOSTICS

LONE = "\ud800"


class Recorder:
    """A memory broker whose transport records every publish (nothing may be sent on error)."""

    def __init__(self) -> None:
        self.broker = Broker("memory://")
        self.sent: list[Any] = []
        transport: Any = self.broker.transport
        original = transport.publish

        async def publish(message: Any) -> None:
            self.sent.append(message)
            await original(message)

        transport.publish = publish


async def refused(**kwargs: Any) -> UnimqError:
    recorder = Recorder()
    args: dict[str, Any] = {"topic": "t", "body": b"x"}
    args.update(kwargs)
    async with recorder.broker:
        with pytest.raises(ConfigurationError) as info:
            await recorder.broker.publish(args.pop("topic"), args.pop("body"), **args)
    assert recorder.sent == []
    from unimq.errors import InvalidMessageError

    assert isinstance(info.value, InvalidMessageError)
    return info.value


@pytest.mark.parametrize(
    "delay", [math.nan, math.inf, -math.inf, timedelta.max, 1e300, -1, "5", True]
)
async def test_bad_delays_are_refused_before_sending(delay: Any) -> None:
    await refused(delay=delay)


async def test_deliver_at_beyond_the_datetime_range_is_refused() -> None:
    await refused(deliver_at=datetime.max.replace(tzinfo=timezone(timedelta(hours=-12))))
    await refused(deliver_at=datetime(9000, 1, 1, tzinfo=timezone.utc))


async def test_naive_deliver_at_is_refused() -> None:
    await refused(deliver_at=datetime(2030, 1, 1))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"key": "k" + LONE},
        {"message_id": LONE},
        {"topic": "t" + LONE},
        {"headers": {"h" + LONE: "v"}},
        {"headers": {"h": "v" + LONE}},
    ],
)
async def test_lone_surrogates_are_refused(kwargs: dict[str, Any]) -> None:
    error = await refused(**kwargs)
    assert "surrogate" in str(error)
    assert error.__context__ is None  # no UnicodeEncodeError (holding the value) behind it


@pytest.mark.parametrize("headers", [[("a", "b")], "a=b", 42])
async def test_non_mapping_headers_are_refused(headers: Any) -> None:
    await refused(headers=headers)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"headers": {"n" * 129: "v"}},
        {"headers": {"é" * 65: "v"}},  # 130 UTF-8 bytes
        {"headers": {"a": "v" * 20000, "b": "w" * 20000}},
        {"key": "k" * 256},
        {"key": "é" * 128},
        {"message_id": "i" * 256},
        {"message_id": ""},
        {"topic": "t" * 256},
        {"topic": ""},
        {"headers": {"x": math.nan}},
        {"headers": {"x": math.inf}},
        {"headers": {"x": None}},
    ],
)
async def test_sizes_and_values_are_checked(kwargs: dict[str, Any]) -> None:
    await refused(**kwargs)


@pytest.mark.parametrize("name", ["unimq-id", "unimq-key", "UNIMQ-attempt", "unimq-whatever"])
async def test_reserved_header_names_are_refused_not_dropped(name: str) -> None:
    error = await refused(headers={name: "x"})
    assert "reserved" in str(error)


async def test_limits_at_the_boundary_round_trip() -> None:
    broker = Broker("memory://")
    seen: list[Message] = []
    headers = {"n" * 128: "v", "é" * 64: "w", **{name: "d" for name in DLQ_DIAGNOSTICS}}

    @broker.subscriber("t" * 255, group="g")
    async def handle(message: Message) -> None:
        seen.append(message)

    async with broker:
        await broker.publish("t" * 255, b"x", key="k" * 255, message_id="i" * 255, headers=headers)
        await broker.drain(timeout=5)
    (message,) = seen
    assert message.key == "k" * 255 and message.id == "i" * 255
    assert {k: message.headers[k] for k in headers} == headers


@pytest.mark.parametrize("body", [{"x": math.nan}, [math.inf], -math.inf, {"a": [1, math.nan]}])
async def test_nan_and_infinity_are_not_sent_as_invalid_json(body: Any) -> None:
    recorder = Recorder()
    async with recorder.broker:
        with pytest.raises(EncodeError):
            await recorder.broker.publish("t", body)
    assert recorder.sent == []


async def test_a_str_body_with_a_lone_surrogate_is_an_encode_error() -> None:
    recorder = Recorder()
    async with recorder.broker:
        with pytest.raises(EncodeError):
            await recorder.broker.publish("t", "body" + LONE)
    assert recorder.sent == []


async def test_header_numbers_are_still_converted() -> None:
    broker = Broker("memory://")
    seen: list[Message] = []

    @broker.subscriber("t", group="g")
    async def handle(message: Message) -> None:
        seen.append(message)

    async with broker:
        await broker.publish("t", b"x", headers={"i": 3, "f": 1.5, "b": True})
        await broker.drain(timeout=5)
    assert {k: seen[0].headers[k] for k in "ifb"} == {"i": "3", "f": "1.5", "b": "True"}
