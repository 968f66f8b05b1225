"""The exceptions unimq raises, and the two a handler raises to steer delivery.

Every error unimq raises derives from :class:`UnimqError`, so an application can catch
"anything the messaging layer said" in one place. Each failure a user can fix has its own
subclass with a message that says what to do; none of them ever contains a password.
"""

from __future__ import annotations

from datetime import timedelta


class UnimqError(Exception):
    """Base class of every error raised by unimq."""


class ConfigurationError(UnimqError):
    """An option, URL or setting is invalid; raised before anything is connected."""


class InvalidURLError(ConfigurationError):
    """The broker URL cannot be parsed (shown with its password masked)."""


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


class NotConnectedError(UnimqError):
    """An operation that needs a running broker was called outside ``async with broker``."""


class PublishError(UnimqError):
    """The broker did not durably accept a message (nack, unroutable, too large, timed out)."""


class MessageTooLargeError(PublishError):
    """The encoded body exceeds the backend's maximum message size."""


class EncodeError(PublishError):
    """A body cannot be encoded (an object that is neither bytes, str, JSON-able nor a model)."""


class DeliveryControl(Exception):
    """Base of the exceptions a handler raises on purpose to steer what happens to its message."""


class RetryLater(DeliveryControl):
    """Retry this message after ``delay`` (counts an attempt; the policy's limit still applies)."""

    def __init__(self, delay: float | timedelta | None = None, reason: str = "") -> None:
        self.delay = delay.total_seconds() if isinstance(delay, timedelta) else delay
        self.reason = reason
        super().__init__(reason or f"retry later (delay={self.delay})")


class Reject(DeliveryControl):
    """Send this message straight to the dead-letter queue, without further retries."""

    def __init__(self, reason: str = "") -> None:
        self.reason = reason
        super().__init__(reason)
