"""Handlers whose body would never run (but whose message was acked) are refused or awaited."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from unimq import Broker, Message
from unimq.errors import HandlerSignatureError


def sync_decorator(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper


async def run_one(register: Callable[[Broker], None]) -> list[str]:
    broker = Broker("memory://")
    register(broker)
    async with broker:
        await broker.publish("t", b"x")
        await broker.drain(timeout=5)
    return SEEN


SEEN: list[str] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    SEEN.clear()


async def test_sync_wraps_decorator_around_async_def_runs_the_body() -> None:
    def register(broker: Broker) -> None:
        @broker.subscriber("t", group="g")
        @sync_decorator
        async def handle(message: Message) -> None:
            SEEN.append("ran")

    assert await run_one(register) == ["ran"]


async def test_def_returning_a_coroutine_is_awaited() -> None:
    def register(broker: Broker) -> None:
        @broker.subscriber("t", group="g")
        def handle(message: Message) -> Awaitable[None]:
            async def later() -> None:
                SEEN.append("ran")

            return later()

    assert await run_one(register) == ["ran"]


async def test_partial_of_an_async_function_is_accepted() -> None:
    async def base(tag: str, message: Message) -> None:
        SEEN.append(tag)

    def register(broker: Broker) -> None:
        broker.subscriber("t", group="g")(functools.partial(base, "partial"))

    assert await run_one(register) == ["partial"]


async def test_object_with_async_call_is_accepted() -> None:
    class Handler:
        async def __call__(self, message: Message) -> None:
            SEEN.append("object")

    def register(broker: Broker) -> None:
        broker.subscriber("t", group="g")(Handler())

    assert await run_one(register) == ["object"]


def test_async_generator_handler_is_refused_at_registration() -> None:
    broker = Broker("memory://")
    with pytest.raises(HandlerSignatureError, match="generator"):

        @broker.subscriber("t", group="g")
        async def handle(message: Message) -> AsyncIterator[None]:
            SEEN.append("ran")
            yield None


def test_generator_handler_is_refused_at_registration() -> None:
    broker = Broker("memory://")
    with pytest.raises(HandlerSignatureError, match="generator"):

        @broker.subscriber("t", group="g")
        def handle(message: Message) -> Iterator[None]:
            yield None


def test_wrapped_async_generator_is_refused_too() -> None:
    broker = Broker("memory://")
    with pytest.raises(HandlerSignatureError, match="generator"):

        @broker.subscriber("t", group="g")
        @sync_decorator
        async def handle(message: Message) -> AsyncIterator[None]:
            yield None


def test_default_group_of_a_partial_or_callable_object_is_stable() -> None:
    async def base(tag: str, message: Message) -> None:
        pass

    class Handler:
        async def __call__(self, message: Message) -> None:
            pass

    broker = Broker("memory://")
    broker.subscriber("a")(functools.partial(base, "x"))
    broker.subscriber("b")(Handler())
    groups = [s.group for s in broker.subscribers]
    assert all("0x" not in group for group in groups), groups  # no memory address
    assert groups[0].endswith("base") and groups[1].endswith("Handler")
