"""Reserved header names: unimq's own headers all start ``unimq-`` (docs/semantics.md)."""

from __future__ import annotations

PREFIX = "unimq-"

ID = "unimq-id"
ATTEMPT = "unimq-attempt"
DELIVER_AT = "unimq-deliver-at"  # epoch milliseconds, UTC
CONTENT_TYPE = "unimq-content-type"
# The logical topic of a retry or re-hop copy, which travels on the group's retry topic.
TOPIC = "unimq-topic"
# When the application published the message (epoch milliseconds, UTC, the publisher's clock);
# retry and re-hop copies keep the original's. Feeds the end-to-end delivery delay
# (docs/operations.md); the broker's own timestamp stands in where it is missing.
PUBLISHED_AT = "unimq-published-at"

DLQ_REASON = "unimq-dlq-reason"
ERROR_TYPE = "unimq-error-type"
ERROR_MESSAGE = "unimq-error-message"
ORIGINAL_TOPIC = "unimq-original-topic"
ORIGINAL_GROUP = "unimq-original-group"
ATTEMPTS = "unimq-attempts"
FAILED_AT = "unimq-failed-at"
# Set on a dead letter published back to its topic by ``unimq dlq replay`` (ISO-8601 UTC).
REPLAYED_AT = "unimq-replayed-at"
# Request/reply (``Broker.request``): where the handler's return value goes, and the id that
# matches the reply to its request. Set by unimq only (user headers may not start ``unimq-``).
REPLY_TO = "unimq-reply-to"
CORRELATION_ID = "unimq-correlation-id"

# What a dead-letter copy adds to the original message's headers.
DLQ_DIAGNOSTICS = frozenset(
    {DLQ_REASON, ERROR_TYPE, ERROR_MESSAGE, ORIGINAL_TOPIC, ORIGINAL_GROUP, ATTEMPTS, FAILED_AT}
)

# Delivery bookkeeping: shown to handlers as Message attributes, not as headers.
BOOKKEEPING = frozenset(
    {ID, ATTEMPT, DELIVER_AT, CONTENT_TYPE, TOPIC, REPLY_TO, CORRELATION_ID, PUBLISHED_AT}
)

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
BINARY = "application/octet-stream"
