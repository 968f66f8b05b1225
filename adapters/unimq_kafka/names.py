"""Topic names: unimq's logical names are used unchanged as Kafka topic names.

Kafka allows ``[a-zA-Z0-9._-]``, at most 249 characters. Rather than mapping names (which
would make the topics hard to find with Kafka's own tools and could make two unimq names
collide), an invalid name is refused with a :class:`~unimq.errors.ConfigurationError` that
says which name and why. Retry topics (``<topic>.<group>.retry``) contain the group name, so
a group name must obey the same rule.
"""

from __future__ import annotations

import re

from unimq.errors import ConfigurationError

MAX_TOPIC_LENGTH = 249
_LEGAL = re.compile(r"^[a-zA-Z0-9._-]+$")

#: Prefix of the topics and the consumer group the adapter uses for itself.
INTERNAL_PREFIX = "unimq."
DELAY_SCHEDULER_GROUP = "unimq.delay-scheduler"
#: Where the dead letters of every DLQ topic start: this group's committed offsets (it never
#: has members; see dead_letters.py).
DEAD_LETTER_GROUP = "unimq.dlq"


def check_topic(name: str) -> str:
    """Return ``name`` if Kafka accepts it as a topic name; raise ConfigurationError if not."""
    if len(name) > MAX_TOPIC_LENGTH or not _LEGAL.match(name) or name in (".", ".."):
        problem = (
            f"it is {len(name)} characters long (at most {MAX_TOPIC_LENGTH})"
            if len(name) > MAX_TOPIC_LENGTH
            else "Kafka topic names allow only letters, digits, '.', '_' and '-'"
        )
        raise ConfigurationError(
            f"{name!r} cannot be a Kafka topic name: {problem}. Retry and dead-letter topics "
            "are named '<topic>.<group>.retry' / '.dlq', so the subscriber's group name must "
            "obey the same rule (pass group='...' explicitly)."
        )
    return name


def delay_topic(tier: float) -> str:
    """``unimq.delay.<tier>``: ``1s``, ``5s``, ``30s``, ``5m``, ``1h``, ``6h``, ``1d``…"""
    seconds = float(tier)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{INTERNAL_PREFIX}delay.{int(seconds // size)}{unit}"
    if seconds == int(seconds):
        return f"{INTERNAL_PREFIX}delay.{int(seconds)}s"
    return f"{INTERNAL_PREFIX}delay.{round(seconds * 1000)}ms"
