"""Outcomes: how one handling of a message ended, and the one function that decides it.

Every way a handler can end — return, ``RetryLater``, ``Reject``, any other exception, a body
that does not decode, ``message.nack()`` — is turned into one of the outcomes below by
:func:`decide` (or :func:`nacked`), and :mod:`unimq.delivery.settle` carries the outcome out.
The retry policy's limit is checked here and nowhere else, so "after the last attempt: the DLQ"
has a single home.
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

from ..errors import Reject, RetryLater
from ..retry import RetryPolicy

logger = logging.getLogger("unimq.pipeline")


class Ack(NamedTuple):
    """The handler succeeded: mark it done (idempotency) and ack."""


class Manual(NamedTuple):
    """``ack="manual"``: the handler settles the message itself; nothing to do on return."""


class Retry(NamedTuple):
    """Try again after ``delay`` seconds (``None``: the policy's backoff for this attempt)."""

    delay: float | None
    error: BaseException | None


class DeadLetter(NamedTuple):
    """Publish the dead-letter copy with ``reason`` (``unimq-dlq-reason``), then ack."""

    reason: str
    error: BaseException | None
    detail: str = ""


class Forward(NamedTuple):
    """Arrived long before ``due`` (a delay longer than the broker's native maximum): send it on
    to the group's retry topic for the next hop, then ack."""

    due: float


class Drop(NamedTuple):
    """The broker may already have handed the delivery to another consumer (it was revoked):
    leave it unsettled, run nothing."""


Outcome = Ack | Manual | Retry | DeadLetter | Forward | Drop

ACK = Ack()
MANUAL = Manual()
DROP = Drop()


def decide(error: BaseException, attempt: int, policy: RetryPolicy) -> Outcome:
    """The outcome of a handler that raised ``error`` on attempt ``attempt``."""
    if isinstance(error, Reject):
        return DeadLetter("rejected", error, error.reason)
    if isinstance(error, RetryLater):
        return _retry(checked_delay(error.delay), error, attempt, policy)
    try:
        retryable = isinstance(error, policy.retry_on)
    except TypeError:  # retry_on holds something that is not an exception class
        logger.error("retry_on=%r is not a tuple of exception classes; retrying", policy.retry_on)
        retryable = True
    if not retryable:
        return DeadLetter("non-retryable", error, str(error))
    return _retry(None, error, attempt, policy)


def nacked(delay: float | None, attempt: int, policy: RetryPolicy) -> Outcome:
    """The outcome of ``message.nack(delay)`` (counts an attempt like a failure)."""
    return _retry(checked_delay(delay), None, attempt, policy)


def _retry(
    delay: float | None, error: BaseException | None, attempt: int, policy: RetryPolicy
) -> Outcome:
    if attempt >= policy.max_attempts:
        return DeadLetter("max-attempts", error, str(error) if error is not None else "")
    return Retry(delay, error)


def checked_delay(delay: object) -> float | None:
    """A delay a handler asked for, or ``None`` (the policy's backoff) when it is unusable: not
    a number, negative, NaN or infinite. Never lets a bad value strand a message."""
    if delay is None:
        return None
    if isinstance(delay, (int, float)) and not isinstance(delay, bool):
        value = float(delay)
        if math.isfinite(value) and value >= 0:
            return value
    logger.error("ignoring unusable retry delay %r; using the retry policy's backoff", delay)
    return None


def backoff(policy: RetryPolicy, attempt: int) -> float:
    """The policy's pause after ``attempt`` failed: finite and >= 0 even when a user's backoff
    function misbehaves (raises, returns None, NaN or infinity)."""
    try:
        value = float(policy.delay_for(attempt))
    except Exception:
        logger.exception(
            "the retry policy's backoff failed for attempt %d; retrying in 1s", attempt
        )
        return 1.0
    if not math.isfinite(value) or value < 0:
        logger.error("the retry policy's backoff returned %r; retrying in 1s", value)
        return 1.0
    return value
