"""The exceptions unimq raises, and the two a handler raises to steer delivery.

Every error unimq raises derives from :class:`UnimqError`, so an application can catch
"anything the messaging layer said" in one place. Each failure a user can fix has its own
subclass with a message that says what to do; none of them ever contains a password.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

#: The longest pause a retry may ask for, in seconds (one day): longer ones are capped. A retry
#: is for a transient failure; a message to act on later is a ``delay=`` publish.
MAX_RETRY_DELAY = 86400.0


class UnimqError(Exception):
    """Base class of every error raised by unimq."""


class ConfigurationError(UnimqError):
    """An option, URL or setting is invalid; raised before anything is connected."""


class InvalidURLError(ConfigurationError):
    """The broker URL cannot be parsed (shown with its password masked)."""


class InvalidMessageError(ConfigurationError):
    """A publish argument is invalid (topic, key, headers, message id, delay); raised by
    ``Broker.publish`` before anything is sent (limits: docs/configuration.md)."""


class UnknownSchemeError(ConfigurationError):
    """No installed transport handles the URL's scheme; the message names the ones installed."""


class MissingDependencyError(ConfigurationError):
    """A transport's client library is not installed; the message names the pip extra."""


class HandlerSignatureError(ConfigurationError):
    """A handler's parameters cannot be bound (two body parameters, an unannotated body, ...)."""


class UnsupportedFeatureError(ConfigurationError):
    """The backend cannot offer a requested semantic (declared in its capabilities)."""


class ConnectionFailedError(UnimqError):
    """The broker could not be reached or the connection was lost."""


class BrokerUnreachableError(ConnectionFailedError):
    """The broker did not accept a connection within the connect timeout."""


class AuthenticationError(ConnectionFailedError):
    """The broker refused the credentials."""


class RateLimiterUnavailableError(ConnectionFailedError):
    """A shared rate limit's store (``RateLimit(shared="redis://...")``) cannot be reached.

    When the broker starts, ``start()`` raises it (a wrong URL or a store that is down fails
    fast). While consuming, the subscriber's handler starts pause instead (its messages stay
    with the broker, nothing is dropped) and the store is asked again every ``retry_after``
    seconds.
    """

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TLSError(ConnectionFailedError):
    """The TLS connection failed: the broker's certificate is not trusted or names another host,
    or one side does not speak TLS on that port. The message says which (docs/security.md)."""


class AuthorizationError(UnimqError):
    """The broker accepted the credentials but refused an operation: the user may not publish to
    a topic, read a group, or use a virtual host. The message names the resource and the user,
    never a secret. Raised at connect, subscribe or publish time, whichever the broker checks."""


class NotConnectedError(UnimqError):
    """An operation that needs a running broker was called outside ``async with broker``."""


class OperationTimeoutError(UnimqError, TimeoutError):
    """A blocking call did not finish in time (also a builtin ``TimeoutError``, so existing
    ``except TimeoutError`` code keeps working)."""


class RequestTimeoutError(OperationTimeoutError):
    """``Broker.request`` got no reply in time (no subscriber, a slow or failing handler)."""


class PublishError(UnimqError):
    """The broker did not durably accept a message (nack, unroutable, too large, timed out)."""


class MessageTooLargeError(PublishError):
    """The encoded body exceeds the backend's maximum message size."""


class EncodeError(PublishError):
    """A body cannot be encoded (an object that is neither bytes, str, JSON-able nor a model)."""


class DeliveryControl(Exception):
    """Base of the exceptions a handler raises on purpose to steer what happens to its message."""


class RetryLater(DeliveryControl):
    """Retry this message after ``delay`` (counts an attempt; the policy's limit still applies).

    ``delay`` is seconds or a ``timedelta``; ``None`` uses the subscriber's backoff. A string
    first argument is taken as the reason (``raise RetryLater("service down")``), since that is
    what such a call means. A NaN, infinite or negative delay is a :class:`ConfigurationError`
    (raised where the handler builds the exception, so the policy retries it like any error);
    a delay above :data:`MAX_RETRY_DELAY` is capped.
    """

    def __init__(self, delay: float | timedelta | str | None = None, reason: str = "") -> None:
        if isinstance(delay, str):
            reason = f"{delay}: {reason}" if reason else delay
            delay = None
        self.delay = _retry_delay(delay)
        self.reason = reason
        super().__init__(reason or f"retry later (delay={self.delay})")


def _retry_delay(delay: Any) -> float | None:
    if delay is None:
        return None
    if isinstance(delay, timedelta):
        seconds = delay.total_seconds()
    elif isinstance(delay, (int, float)) and not isinstance(delay, bool):
        seconds = float(delay)
    else:
        raise ConfigurationError(
            f"RetryLater: delay must be seconds, a timedelta or None, got {delay!r}"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigurationError(f"RetryLater: delay must be a finite number >= 0, got {delay!r}")
    return min(seconds, MAX_RETRY_DELAY)


class Reject(DeliveryControl):
    """Send this message straight to the dead-letter queue, without further retries."""

    def __init__(self, reason: str = "") -> None:
        self.reason = reason
        super().__init__(reason)
