"""Subscribers and routers: the declarations a service makes before it connects to anything."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from .batch import BatchHandler, BatchPolicy
from .errors import ConfigurationError, InvalidMessageError, UnsupportedFeatureError
from .handler import BoundHandler, HandlerFunc, describe
from .naming import dead_letter_topic, retry_topic
from .ratelimit import RateLimit, check_shared
from .retry import RetryPolicy
from .validation import check_name

F = TypeVar("F", bound=HandlerFunc)

#: The largest ``concurrency`` (each unit costs a worker task and a prefetch slot up front).
MAX_CONCURRENCY = 4096
# Strings that are a boolean written as text, not a dead-letter topic name.
_NOT_A_TOPIC = frozenset({"", "true", "false", "yes", "no", "on", "off", "0", "1", "none"})
AckMode = Literal["auto", "manual"]


@dataclass(frozen=True)
class Subscriber:
    """One ``@subscriber`` declaration, validated. See docs/concepts.md for each option."""

    topic: str
    handler: BoundHandler  # a BatchHandler when ``batch`` is set
    group: str
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    dead_letter: bool | str = True
    ordered: bool = False
    concurrency: int = 16
    idempotent: bool = False
    ack: AckMode = "auto"
    broadcast: bool = False
    batch: BatchPolicy | None = None
    rate_limit: RateLimit | None = None
    transactional: bool = False

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
    batch: BatchPolicy | None = None,
    rate_limit: RateLimit | None = None,
    transactional: bool = False,
) -> Subscriber:
    if batch is not None and not isinstance(batch, BatchPolicy):
        raise ConfigurationError(f"batch must be a unimq.BatchPolicy, got {batch!r}")
    if rate_limit is not None and not isinstance(rate_limit, RateLimit):
        raise ConfigurationError(f"rate_limit must be a unimq.RateLimit, got {rate_limit!r}")
    if rate_limit is not None:
        check_shared(rate_limit)  # an uninstalled shared store fails here, not at start
    handler = BoundHandler(func) if batch is None else BatchHandler(func)
    where = f"subscriber {handler.name}"
    _check_name(topic, "topic", where)
    if group is not None:
        _check_name(group, "group", where)
    if (
        not isinstance(concurrency, int)
        or isinstance(concurrency, bool)
        or not 1 <= concurrency <= MAX_CONCURRENCY
    ):
        raise ConfigurationError(
            f"{where}: concurrency must be an integer from 1 to {MAX_CONCURRENCY}, "
            f"got {concurrency!r}"
        )
    for name, value in (
        ("ordered", ordered),
        ("idempotent", idempotent),
        ("broadcast", broadcast),
        ("transactional", transactional),
    ):
        if not isinstance(value, bool):  # "false" is truthy: refuse rather than guess
            raise ConfigurationError(f"{where}: {name} must be True or False, got {value!r}")
    if ack not in ("auto", "manual") or not isinstance(ack, str):
        raise ConfigurationError(f"{where}: ack must be 'auto' or 'manual', got {ack!r}")
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise ConfigurationError(f"{where}: retry must be a RetryPolicy, got {retry!r}")
    if not isinstance(dead_letter, (bool, str)) or (
        isinstance(dead_letter, str) and dead_letter.strip().lower() in _NOT_A_TOPIC
    ):
        raise ConfigurationError(
            f"{where}: dead_letter must be True, False or a topic name, got {dead_letter!r}"
        )
    if transactional:
        _check_transactional(where, concurrency, ack, batch)
    group = group or describe(func)
    if isinstance(dead_letter, str):
        _check_name(dead_letter, "dead_letter", where)
        if dead_letter in (topic, retry_topic(topic, group)):
            raise ConfigurationError(
                f"{where}: dead_letter={dead_letter!r} is the subscriber's own topic (or its "
                "retry topic): a failing message would come back to the same handler forever"
            )
    return Subscriber(
        topic=topic,
        handler=handler,
        group=group,
        retry=retry or RetryPolicy(),
        dead_letter=dead_letter,
        ordered=ordered,
        concurrency=concurrency,
        idempotent=idempotent,
        ack="manual" if ack == "manual" else "auto",
        broadcast=broadcast,
        batch=batch,
        rate_limit=rate_limit,
        transactional=transactional,
    )


def _check_transactional(where: str, concurrency: int, ack: str, batch: BatchPolicy | None) -> None:
    """Options that cannot work with ``transactional=True`` (docs/consistency.md)."""
    if concurrency != 1:
        raise UnsupportedFeatureError(
            f"{where}: transactional=True needs concurrency=1, got {concurrency}: one broker "
            "transaction is open at a time, and the offset it commits covers every earlier "
            "message of the partition, so those must have been handled first"
        )
    if ack != "auto":
        raise UnsupportedFeatureError(
            f"{where}: transactional=True needs ack='auto': the transaction's commit is the ack"
        )
    if batch is not None:
        raise UnsupportedFeatureError(
            f"{where}: transactional=True cannot be combined with batch=: a transaction "
            "consumes one message"
        )


def _check_name(value: object, what: str, where: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{where}: {what} must be a non-empty string, got {value!r}")
    try:
        check_name(value, what)
    except InvalidMessageError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None


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
        batch: BatchPolicy | None = None,
        rate_limit: RateLimit | None = None,
        transactional: bool = False,
    ) -> Callable[[F], F]:
        """Register the decorated function as the handler of ``topic`` for ``group``.

        ``batch=BatchPolicy(...)`` makes it a batch handler (``list[T]`` and/or
        ``list[Message]``); ``rate_limit=RateLimit(rate, per)`` caps handler starts.
        ``transactional=True`` commits the handler's publishes and the consumption of its
        message in one broker transaction (Kafka; docs/consistency.md).
        """

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
                    batch=batch,
                    rate_limit=rate_limit,
                    transactional=transactional,
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
