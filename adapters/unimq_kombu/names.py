"""Names on the broker: a per-topic exchange, a queue per group, a holding queue per topic.

SQS queue names allow only letters, digits, ``-`` and ``_`` (80 at most), so on SQS a name is
a short hash of the topic plus a readable, sanitised tail; the hash makes the prefix of a
topic's queues unique, which is how the adapter finds them. Redis takes the names as given.
"""

from __future__ import annotations

import hashlib
import re

_SQS_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def exchange_name(topic: str) -> str:
    return f"unimq.{topic}"


def group_queue(topic: str, group: str, sqs: bool) -> str:
    if not sqs:
        return f"{topic}::{group}"
    return f"{sqs_topic_prefix(topic)}{_SQS_UNSAFE.sub('_', group)[:40]}-{_digest(group, 6)}"


def holding_queue(topic: str, sqs: bool) -> str:
    """Keeps what is published to a topic before any group subscribed (dead letters)."""
    return f"{sqs_topic_prefix(topic)}_hold" if sqs else f"{topic}::"


def sqs_topic_prefix(topic: str) -> str:
    return f"u{_digest(topic, 12)}-"


def _digest(text: str, length: int) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()[:length]
