"""unimq: one messaging API and one set of semantics on RabbitMQ, Kafka, RocketMQ and memory."""

from . import logs, testing
from .batch import BatchFailed, BatchPolicy, Outgoing, PublishBatchError
from .broker import Broker, PublishReceipt
from .errors import (
    AuthenticationError,
    AuthorizationError,
    BrokerUnreachableError,
    ConfigurationError,
    ConnectionFailedError,
    EncodeError,
    HandlerSignatureError,
    InvalidURLError,
    MessageTooLargeError,
    MissingDependencyError,
    NotConnectedError,
    PublishError,
    RateLimiterUnavailableError,
    Reject,
    RequestTimeoutError,
    RetryLater,
    TLSError,
    UnimqError,
    UnknownSchemeError,
    UnsupportedFeatureError,
)
from .idempotency import IdempotencyStore, MemoryIdempotencyStore
from .message import Message
from .ratelimit import RateLimit
from .retry import RetryPolicy, exponential, fixed
from .router import Router
from .transport import Capabilities

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "AuthorizationError",
    "BatchFailed",
    "BatchPolicy",
    "Broker",
    "BrokerUnreachableError",
    "Capabilities",
    "ConfigurationError",
    "ConnectionFailedError",
    "EncodeError",
    "HandlerSignatureError",
    "IdempotencyStore",
    "InvalidURLError",
    "MemoryIdempotencyStore",
    "Message",
    "MessageTooLargeError",
    "MissingDependencyError",
    "NotConnectedError",
    "Outgoing",
    "PublishBatchError",
    "PublishError",
    "PublishReceipt",
    "RateLimit",
    "RateLimiterUnavailableError",
    "Reject",
    "RequestTimeoutError",
    "RetryLater",
    "RetryPolicy",
    "Router",
    "TLSError",
    "UnimqError",
    "UnknownSchemeError",
    "UnsupportedFeatureError",
    "__version__",
    "exponential",
    "fixed",
    "logs",
    "testing",
]
