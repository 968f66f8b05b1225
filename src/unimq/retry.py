"""Retry policies and backoff functions.

A backoff is any callable ``attempt -> seconds`` where ``attempt`` is the number of the attempt
that just failed (1 for the first delivery). Attempts are carried in the message itself
(``unimq-attempt``), so a policy's limit holds across processes and restarts.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import ConfigurationError

Backoff = Callable[[int], float]


@dataclass(frozen=True)
class FixedBackoff:
    """The same pause before every retry."""

    seconds: float

    def __post_init__(self) -> None:
        if self.seconds < 0:
            raise ConfigurationError(f"fixed backoff must be >= 0 seconds, got {self.seconds}")

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
        if self.initial < 0 or self.max < 0:
            raise ConfigurationError("exponential backoff: initial and max must be >= 0")
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


def fixed(seconds: float) -> FixedBackoff:
    """Wait ``seconds`` before every retry."""
    return FixedBackoff(float(seconds))


def exponential(
    initial: float = 1.0, factor: float = 2.0, max: float = 60.0, jitter: float = 0.0
) -> ExponentialBackoff:
    """Wait ``initial``, then ``initial*factor``, ... up to ``max`` seconds between retries."""
    return ExponentialBackoff(float(initial), float(factor), float(max), float(jitter))


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
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ConfigurationError(
                f"max_attempts must be an integer >= 1, got {self.max_attempts!r}"
            )
        if not callable(self.backoff):
            raise ConfigurationError("backoff must be callable: attempt -> seconds")
        if isinstance(self.retry_on, type):
            object.__setattr__(self, "retry_on", (self.retry_on,))

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        return attempt < self.max_attempts and isinstance(error, self.retry_on)

    def delay_for(self, attempt: int) -> float:
        return max(0.0, float(self.backoff(attempt)))
