"""Subscribers and routers: the declarations a service makes before it connects to anything."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from .errors import ConfigurationError
from .handler import BoundHandler, HandlerFunc, describe
from .naming import dead_letter_topic
from .retry import RetryPolicy

F = TypeVar("F", bound=HandlerFunc)
AckMode = Literal["auto", "manual"]


@dataclass(frozen=True)
class Subscriber:
    """One ``@subscriber`` declaration, validated. See DESIGN.md section 1 for each option."""

    topic: str
    handler: BoundHandler
    group: str
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    dead_letter: bool | str = True
    ordered: bool = False
    concurrency: int = 16
    idempotent: bool = False
    ack: AckMode = "auto"
    broadcast: bool = False

    @property
    def dead_letter_topic(self) -> str | None:
        if self.dead_letter is True:
            return dead_letter_topic(self.topic, self.group)
        if isinstance(self.dead_letter, str):
            return self.dead_letter
        return None

    def __repr__(self) -> str:
        return f"<Subscriber {self.topic!r} group={self.group!r} handler={self.handler.name}>"


def make_subscriber(
    func: HandlerFunc,
    topic: str,
    *,
    group: str | None,
    retry: RetryPolicy | None,
    dead_letter: bool | str,
    ordered: bool,
    concurrency: int,
    idempotent: bool,
    ack: str,
    broadcast: bool,
) -> Subscriber:
    handler = BoundHandler(func)
    where = f"subscriber {handler.name}"
    if not isinstance(topic, str) or not topic.strip():
        raise ConfigurationError(f"{where}: topic must be a non-empty string, got {topic!r}")
    if group is not None and (not isinstance(group, str) or not group.strip()):
        raise ConfigurationError(f"{where}: group must be a non-empty string, got {group!r}")
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise ConfigurationError(
            f"{where}: concurrency must be an integer >= 1, got {concurrency!r}"
        )
    if ack not in ("auto", "manual"):
        raise ConfigurationError(f"{where}: ack must be 'auto' or 'manual', got {ack!r}")
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise ConfigurationError(f"{where}: retry must be a RetryPolicy, got {retry!r}")
    if not isinstance(dead_letter, (bool, str)) or dead_letter == "":
        raise ConfigurationError(
            f"{where}: dead_letter must be True, False or a topic name, got {dead_letter!r}"
        )
    return Subscriber(
        topic=topic,
        handler=handler,
        group=group or describe(func),
        retry=retry or RetryPolicy(),
        dead_letter=dead_letter,
        ordered=bool(ordered),
        concurrency=concurrency,
        idempotent=bool(idempotent),
        ack="manual" if ack == "manual" else "auto",
        broadcast=bool(broadcast),
    )


class Router:
    """A group of subscribers declared in one module and included into a broker later."""

    def __init__(self) -> None:
        self.subscribers: list[Subscriber] = []

    def subscriber(
        self,
        topic: str,
        *,
        group: str | None = None,
        retry: RetryPolicy | None = None,
        dead_letter: bool | str = True,
        ordered: bool = False,
        concurrency: int = 16,
        idempotent: bool = False,
        ack: Literal["auto", "manual"] = "auto",
        broadcast: bool = False,
    ) -> Callable[[F], F]:
        """Register the decorated function as the handler of ``topic`` for ``group``."""

        def register(func: F) -> F:
            self.add(
                make_subscriber(
                    func,
                    topic,
                    group=group,
                    retry=retry,
                    dead_letter=dead_letter,
                    ordered=ordered,
                    concurrency=concurrency,
                    idempotent=idempotent,
                    ack=ack,
                    broadcast=broadcast,
                )
            )
            return func

        return register

    def add(self, subscriber: Subscriber) -> None:
        self._check_new(subscriber)
        self.subscribers.append(subscriber)

    def include_router(self, router: Router) -> None:
        """Add every subscriber of ``router`` to this one."""
        for subscriber in router.subscribers:
            self.add(subscriber)

    def _check_new(self, subscriber: Subscriber) -> None:
        for existing in self.subscribers:
            if existing.topic == subscriber.topic and existing.group == subscriber.group:
                raise ConfigurationError(
                    f"two subscribers for topic {subscriber.topic!r} in group {subscriber.group!r} "
                    f"({existing.handler.name} and {subscriber.handler.name}); give one a "
                    "different group, or merge them"
                )
