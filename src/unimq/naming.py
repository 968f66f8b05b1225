"""Names of the topics unimq derives from a subscriber: its retry topic and its dead-letter topic.

Both are per (topic, group) so that a retry or a dead letter concerns only the group whose
handler failed; other groups that already handled the message never see it again.
"""

from __future__ import annotations


def retry_topic(topic: str, group: str) -> str:
    """Where retry copies and delay re-hops for ``group`` travel (the group also consumes it)."""
    return f"{topic}.{group}.retry"


def dead_letter_topic(topic: str, group: str) -> str:
    """The default DLQ of a subscriber: ``<topic>.<group>.dlq``."""
    return f"{topic}.{group}.dlq"


def reply_topic(instance_id: str) -> str:
    """Where the replies to this broker instance's requests travel (``Broker.request``)."""
    return f"unimq.reply.{instance_id}"
