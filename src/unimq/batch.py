"""Batches: publishing many messages at once and handling them in batches.

``BatchPolicy`` turns a subscriber into a batch subscriber: its handler takes ``list[T]`` (the
bodies, each decoded to ``T``) and/or ``list[Message]``, called with up to ``max_size`` messages
once that many are ready or ``max_wait`` seconds after the first one arrived. Each message
keeps its own fate: success settles the whole batch; an exception retries every message of it
per the retry policy (attempts counted per message); ``BatchFailed({index: exception})`` fails
only those messages; a body that does not decode goes to the dead-letter topic alone and the
others are still delivered.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .codec import Decoder, decoder_for
from .errors import ConfigurationError, HandlerSignatureError, PublishError
from .handler import BoundHandler
from .message import Message

#: The largest batch a policy may ask for: one batch is held unsettled at once.
MAX_BATCH_SIZE = 10_000


@dataclass(frozen=True)
class BatchPolicy:
    """Up to ``max_size`` messages per handler call, waiting at most ``max_wait`` seconds (real
    time, even on a VirtualClock: batching is about throughput, not the calendar) for a full
    batch after the first message arrived."""

    max_size: int = 100
    max_wait: float = 0.05

    def __post_init__(self) -> None:
        size = self.max_size
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_BATCH_SIZE:
            raise ConfigurationError(
                f"BatchPolicy.max_size must be an integer from 1 to {MAX_BATCH_SIZE}, got {size!r}"
            )
        wait = self.max_wait
        if (
            not isinstance(wait, (int, float))
            or isinstance(wait, bool)
            or not math.isfinite(wait)
            or wait < 0
        ):
            raise ConfigurationError(
                f"BatchPolicy.max_wait must be a finite number of seconds >= 0, got {wait!r}"
            )


class BatchFailed(Exception):
    """Raised by a batch handler to fail only some messages of the batch: ``failures`` maps the
    index of each failed message (in the handler's lists) to its exception, which is then
    handled as if that message's handler had raised it (``RetryLater``, ``Reject``, any other
    exception per the retry policy). The other messages are acked."""

    def __init__(self, failures: Mapping[int, BaseException]) -> None:
        if not isinstance(failures, Mapping) or not all(
            isinstance(i, int) and isinstance(e, BaseException) for i, e in failures.items()
        ):
            raise TypeError("BatchFailed takes a mapping of message index -> exception")
        self.failures = dict(failures)
        super().__init__(f"{len(self.failures)} message(s) of the batch failed")


@dataclass(frozen=True)
class Outgoing:
    """One item of ``publish_batch`` with its own key, headers, id or delay."""

    body: Any
    key: str | None = None
    headers: Mapping[str, str] | None = None
    message_id: str | None = None
    delay: timedelta | float | None = None
    deliver_at: datetime | None = None


class PublishBatchError(PublishError):
    """Some items of ``publish_batch`` were not confirmed (the others stay published).

    ``failures`` maps item index -> the error; ``receipts`` holds the receipt of every
    confirmed item by index (``None`` for the failed ones).
    """

    def __init__(self, failures: Mapping[int, BaseException], receipts: Sequence[Any]) -> None:
        self.failures = dict(failures)
        self.receipts = list(receipts)
        first = ", ".join(
            f"{index}: {type(error).__name__}: {error}"
            for index, error in list(self.failures.items())[:5]
        )
        more = f" (+{len(self.failures) - 5} more)" if len(self.failures) > 5 else ""
        super().__init__(
            f"{len(self.failures)} of {len(self.receipts)} message(s) were not confirmed: "
            f"{first}{more}; the other {len(self.receipts) - len(self.failures)} are published"
        )


class BatchHandler(BoundHandler):
    """A batch handler with its parameter plan worked out once. It is called exactly like a
    single-message handler (``invoke``, inherited); only its parameters are bound differently:
    ``list[T]`` gets the decoded bodies and ``list[Message]`` the messages.

    ``takes_bodies`` / ``takes_messages`` say which lists the handler declares: the batch
    pipeline builds only those (a ``Message`` per delivery costs about as much as reading its
    headers, and a handler of bodies alone never sees one)."""

    __slots__ = ("body_decoder", "takes_bodies", "takes_messages")

    def __init__(self, func: Callable[..., Any]) -> None:  # replaces the base binding
        signature, hints = self._bind_callable(func)
        kinds: list[tuple[bool, str]] = []
        self._decode: Decoder | None = None
        #: What makes a body for the handler in the batch admission loop; ``None`` for
        #: ``list[bytes]`` (the body as it is: no call per message) or no list of bodies.
        self.body_decoder: Decoder | None = None
        bodies = 0
        for name, param in signature.parameters.items():
            if param.kind in (param.POSITIONAL_ONLY, param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise HandlerSignatureError(
                    f"batch handler {self.name}: parameter {name!r} cannot be bound; declare "
                    "'items: list[T]' and/or 'messages: list[Message]'"
                )
            item = _list_item(hints.get(name, inspect.Parameter.empty))
            if item is None:
                raise HandlerSignatureError(
                    f"batch handler {self.name}: parameter {name!r} must be annotated "
                    "list[T] (the bodies) or list[Message] (the messages)"
                )
            if isinstance(item, type) and issubclass(item, Message):
                kinds.append((True, name))
                continue
            bodies += 1
            kinds.append((False, name))
            try:
                self._decode = decoder_for(item)
                self.body_decoder = None if item is bytes else self._decode
            except Exception as exc:
                raise HandlerSignatureError(
                    f"batch handler {self.name}: pydantic cannot decode to {item!r}: {exc}"
                ) from None
        if bodies > 1:
            raise HandlerSignatureError(
                f"batch handler {self.name} has {bodies} body lists; keep one list[T] and "
                "annotate the other list[Message]"
            )
        self._kinds = tuple(kinds)
        self.takes_bodies = bodies > 0
        self.takes_messages = any(is_message for is_message, _ in kinds)

    def decode(self, body: bytes) -> Any:
        """One message's body for the handler (raises ``codec.DecodeError``)."""
        return body if self._decode is None else self._decode(body)

    def batch_arguments(
        self, messages: list[Message] | None, bodies: list[Any] | None
    ) -> dict[str, Any]:
        """The keyword arguments of one call; a list the handler does not take may be None."""
        return {name: messages if is_message else bodies for is_message, name in self._kinds}


def _list_item(annotation: Any) -> Any:
    """``T`` of ``list[T]`` / ``Sequence[T]``; ``None`` for anything else."""
    if typing.get_origin(annotation) in (list, Sequence):
        args = typing.get_args(annotation)
        return args[0] if args else None
    return None
