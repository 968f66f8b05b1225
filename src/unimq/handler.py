"""Binding a user's handler function to a message, by annotation.

A parameter annotated :class:`~unimq.Message` receives the message; the one other parameter
(at most one) receives the body decoded to its annotation. All checks happen when the handler
is registered, so a mistake fails at import time with the handler's name in the error, not
on the first message in production.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import typing
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

from .codec import Decoder, decoder_for
from .errors import HandlerSignatureError
from .message import Message

HandlerFunc = Callable[..., Any]


def describe(func: Any) -> str:
    """``module.qualname`` of a handler: also the default group name, so it must be stable
    across restarts (no ``repr`` with a memory address): a partial is named after its function,
    a callable object after its class."""
    while isinstance(func, functools.partial):
        func = func.func
    if getattr(func, "__qualname__", None) is None and not isinstance(func, type):
        func = type(func)  # a callable object
    module = getattr(func, "__module__", None) or "?"
    qualname = getattr(func, "__qualname__", None) or type(func).__qualname__
    return f"{module}.{qualname}"


class BoundHandler:
    """A handler with its parameter plan worked out once."""

    __slots__ = ("_decode", "_direct", "_kinds", "func", "is_async", "name")

    def __init__(self, func: HandlerFunc) -> None:
        signature, hints = self._bind_callable(func)
        kinds: list[tuple[bool, str]] = []  # (is_message, name)
        body: list[str] = []
        self._decode: Decoder | None = None
        for name, param in signature.parameters.items():
            if param.kind is param.POSITIONAL_ONLY:
                raise HandlerSignatureError(
                    f"handler {self.name}: positional-only parameter {name!r} cannot be bound"
                )
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise HandlerSignatureError(
                    f"handler {self.name}: *args/**kwargs parameters cannot be bound; declare the "
                    "body parameter and/or a parameter annotated Message"
                )
            annotation = hints.get(name, inspect.Parameter.empty)
            if annotation is inspect.Parameter.empty:
                raise HandlerSignatureError(
                    f"handler {self.name}: parameter {name!r} has no annotation; annotate the body "
                    f"parameter with the type to decode it to (e.g. '{name}: OrderCreated', "
                    f"'{name}: dict', '{name}: bytes') or the message parameter with 'Message'"
                )
            if isinstance(annotation, type) and issubclass(annotation, Message):
                kinds.append((True, name))
                continue
            body.append(name)
            kinds.append((False, name))
            try:
                self._decode = decoder_for(annotation)
            except Exception as exc:
                raise HandlerSignatureError(
                    f"handler {self.name}: pydantic cannot decode to the annotation of {name!r} "
                    f"({annotation!r}): {exc}"
                ) from None
        if len(body) > 1:
            raise HandlerSignatureError(
                f"handler {self.name} has {len(body)} body parameters ({', '.join(body)}); a "
                "message has one body: keep one body parameter and annotate any other with Message"
            )
        self._kinds = tuple(kinds)

    def _bind_callable(self, func: HandlerFunc) -> tuple[inspect.Signature, dict[str, Any]]:
        """How to call ``func`` (on the loop or in a thread); its signature and annotations.
        Shared with batch handlers, whose parameters are bound differently."""
        if not callable(func):
            raise HandlerSignatureError(f"handler {func!r} is not callable")
        self.func = func
        self.name = describe(func)
        target = _target(func)
        if inspect.isasyncgenfunction(target) or inspect.isgeneratorfunction(target):
            # Calling it only builds a generator: the body would never run, yet the message
            # would be acked.
            raise HandlerSignatureError(
                f"handler {self.name} is a generator function (it contains 'yield'); a handler "
                "must return (or be an 'async def' that returns), not yield"
            )
        #: Runs on the event loop (an ``async def``, a partial of one, an object with an
        #: ``async __call__``, or a sync decorator around an ``async def``).
        self.is_async = _is_async(func) or inspect.iscoroutinefunction(target)
        #: A plain ``async def``: its call is the coroutine to await (the fast path).
        self._direct = inspect.iscoroutinefunction(func)
        try:
            signature = inspect.signature(func)
        except (TypeError, ValueError) as exc:
            raise HandlerSignatureError(f"cannot inspect handler {self.name}: {exc}") from None
        try:
            hints = typing.get_type_hints(_hints_source(func))
        except Exception as exc:
            raise HandlerSignatureError(
                f"cannot resolve the annotations of handler {self.name}: {exc}"
            ) from None
        return signature, hints

    def arguments(self, message: Message) -> dict[str, Any]:
        """Decode the body for this handler (raises ``codec.DecodeError`` for a poison body)."""
        decode = self._decode
        kwargs: dict[str, Any] = {}
        for is_message, name in self._kinds:
            kwargs[name] = message if is_message else decode(message.body)  # type: ignore[misc]
        return kwargs

    def invoke(self, kwargs: dict[str, Any], executor: Executor | None) -> Awaitable[Any]:
        if self._direct:
            return self.func(**kwargs)  # type: ignore[no-any-return]
        if self.is_async:
            return _outcome(self.func(**kwargs), self.name)
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        call = functools.partial(context.run, self.func, **kwargs)
        return _threaded(loop.run_in_executor(executor, call), self.name)


async def _threaded(future: Awaitable[Any], name: str) -> Any:
    return await _outcome(await future, name)


async def _outcome(result: Any, name: str) -> Any:
    """What a handler call returned, awaited if it is awaitable (a ``def`` that returns a
    coroutine, a decorator that hides an ``async def``): never dropped unawaited, which would
    ack a message whose handler did not run."""
    if inspect.isawaitable(result):
        return await result
    if inspect.isgenerator(result) or inspect.isasyncgen(result):
        raise HandlerSignatureError(
            f"handler {name} returned a generator: its body did not run; return, do not yield"
        )
    return result


def _target(func: Any) -> Any:
    """The function that finally runs: through partials and ``functools.wraps`` layers."""
    while isinstance(func, functools.partial):
        func = func.func
    try:
        func = inspect.unwrap(func)
    except ValueError:  # a __wrapped__ cycle
        return func
    while isinstance(func, functools.partial):
        func = func.func
    return func


def _hints_source(func: Any) -> Any:
    """What ``typing.get_type_hints`` can read: the function inside a partial, the bound
    ``__call__`` of a callable object (``get_type_hints`` refuses both as they are)."""
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.isfunction(func) or inspect.ismethod(func) or inspect.isbuiltin(func):
        return func
    if isinstance(func, type):
        return func
    call = getattr(func, "__call__", None)  # noqa: B004 - callable objects
    return call if call is not None else func


def _is_async(func: Any) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.iscoroutinefunction(func):
        return True
    call = getattr(func, "__call__", None)  # noqa: B004 - callable objects with async __call__
    return call is not None and not inspect.isfunction(func) and inspect.iscoroutinefunction(call)
