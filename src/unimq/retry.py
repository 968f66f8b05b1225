"""Retry policies and backoff functions.

A backoff is any callable ``attempt -> seconds`` where ``attempt`` is the number of the attempt
that just failed (1 for the first delivery). :meth:`RetryPolicy.delay_for` never fails, since a
delivery must always be settled: a backoff that raises or returns no number (``None``, NaN) is
logged once and replaced by the default exponential backoff; a negative pause counts as 0 and
every pause (infinity too) is capped at :data:`~unimq.errors.MAX_RETRY_DELAY` (one day).
Attempts are carried in the message itself (``unimq-attempt``), so a policy's limit holds
across processes and restarts.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import MAX_RETRY_DELAY, ConfigurationError

logger = logging.getLogger("unimq")

Backoff = Callable[[int], float]


@dataclass(frozen=True)
class FixedBackoff:
    """The same pause before every retry."""

    seconds: float

    def __post_init__(self) -> None:
        _seconds(self.seconds, "fixed backoff")

    def __call__(self, attempt: int) -> float:
        return self.seconds


@dataclass(frozen=True)
class ExponentialBackoff:
    """``initial * factor ** (attempt - 1)``, capped at ``max``, plus up to ``jitter`` x of it.

    Jitter spreads retries of messages that failed together (a broker blip) so they do not
    all come back in the same instant; ``jitter=0.1`` adds a random 0-10 %.
    """

    initial: float = 1.0
    factor: float = 2.0
    max: float = 60.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        for name in ("initial", "factor", "max", "jitter"):
            _seconds(getattr(self, name), f"exponential backoff: {name}")
        if self.factor < 1:
            raise ConfigurationError(f"exponential backoff: factor must be >= 1, got {self.factor}")
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError(
                f"exponential backoff: jitter must be in [0, 1], got {self.jitter}"
            )

    def __call__(self, attempt: int) -> float:
        exponent = max(attempt - 1, 0)
        try:
            delay = min(self.max, self.initial * self.factor**exponent)
        except OverflowError:
            delay = self.max
        if self.jitter:
            delay = min(self.max, delay * (1 + random.uniform(0, self.jitter)))
        return delay


def _seconds(value: Any, what: str) -> float:
    """``value`` as a finite number >= 0, or a :class:`ConfigurationError` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ConfigurationError(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)


def fixed(seconds: float) -> FixedBackoff:
    """Wait ``seconds`` before every retry."""
    return FixedBackoff(_seconds(seconds, "fixed backoff"))


def exponential(
    initial: float = 1.0, factor: float = 2.0, max: float = 60.0, jitter: float = 0.0
) -> ExponentialBackoff:
    """Wait ``initial``, then ``initial*factor``, ... up to ``max`` seconds between retries."""
    return ExponentialBackoff(
        _seconds(initial, "exponential backoff: initial"),
        _seconds(factor, "exponential backoff: factor"),
        _seconds(max, "exponential backoff: max"),
        _seconds(jitter, "exponential backoff: jitter"),
    )


#: What a misbehaving user backoff is replaced by (the default policy's backoff).
FALLBACK_BACKOFF = ExponentialBackoff(initial=1.0, factor=2.0, max=60.0)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how soon a failing message is retried before it is dead-lettered.

    ``max_attempts`` counts every delivery, the first included: ``max_attempts=1`` means
    "never retry". Exceptions that are not instances of ``retry_on`` go to the DLQ at once.
    """

    max_attempts: int = 3
    backoff: Backoff = field(default_factory=lambda: exponential(initial=1, factor=2, max=60))
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if (
            not isinstance(self.max_attempts, int)
            or isinstance(self.max_attempts, bool)
            or self.max_attempts < 1
        ):
            raise ConfigurationError(
                f"max_attempts must be an integer >= 1, got {self.max_attempts!r}"
            )
        if not callable(self.backoff):
            raise ConfigurationError("backoff must be callable: attempt -> seconds")
        retry_on: Any = self.retry_on
        if isinstance(retry_on, type):
            retry_on = (retry_on,)
        if not isinstance(retry_on, tuple) or not all(
            isinstance(kind, type) and issubclass(kind, BaseException) for kind in retry_on
        ):
            # isinstance(error, ("ValueError",)) would raise TypeError while settling.
            raise ConfigurationError(
                "retry_on must be an exception class or a tuple of exception classes "
                f"(e.g. (ValueError, TimeoutError)), got {self.retry_on!r}"
            )
        object.__setattr__(self, "retry_on", retry_on)

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        return attempt < self.max_attempts and isinstance(error, self.retry_on)

    def delay_for(self, attempt: int) -> float:
        """Seconds to wait before retrying after ``attempt`` failed: always a finite float in
        ``[0, MAX_RETRY_DELAY]``; never raises (see the module docstring)."""
        try:
            value = self.backoff(attempt)
            seconds = float(value)
            if isinstance(value, bool) or math.isnan(seconds):
                raise ValueError(f"returned {value!r}")
        except Exception as exc:
            _warn_once(self.backoff, exc)
            seconds = FALLBACK_BACKOFF(attempt)
        return min(max(0.0, seconds), MAX_RETRY_DELAY)


_warned: set[int] = set()


def _warn_once(backoff: Backoff, error: BaseException) -> None:
    if id(backoff) in _warned:
        return
    _warned.add(id(backoff))
    logger.warning(
        "retry backoff %r failed (%s: %s); using the default exponential backoff instead",
        backoff,
        type(error).__name__,
        error,
    )
