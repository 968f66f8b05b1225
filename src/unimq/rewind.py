"""Rewinding a consumer group to a point in time (``Broker.rewind``, ``unimq rewind``).

After a bug fix, an operator re-processes what a broken consumer already took: the group's
position moves back to the first message published at or after a time, and the group consumes
everything from there again. Each backend moves its own notion of a position
(:class:`~unimq.transport.SupportsRewind`); this module only turns ``to=`` / ``by=`` into that
time and refuses clearly where the backend cannot.

Idempotent subscribers (``idempotent=True``) skip the re-delivered messages they already
handled: their marks are kept by message id, with no time index to clear "the marks of a
window" by. To re-process with an idempotent handler, rewind a group whose marks you can drop
(a new group name, or clear the store) — see docs/operations.md.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from .errors import ConfigurationError, UnsupportedFeatureError
from .transport import SupportsRewind, Transport


def since_time(
    now: float, *, to: datetime | float | None = None, by: timedelta | float | None = None
) -> float:
    """The epoch time a rewind goes back to: ``to`` (a datetime, naive = UTC, or epoch
    seconds), or ``by`` (a duration, or seconds) before ``now``. Exactly one of them."""
    if (to is None) == (by is None):
        raise ConfigurationError("rewind needs exactly one of to= (a time) and by= (a duration)")
    if by is not None:
        seconds = by.total_seconds() if isinstance(by, timedelta) else by
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise ConfigurationError(f"rewind by= must be a duration >= 0, got {by!r}")
        return now - float(seconds)
    if isinstance(to, datetime):
        if to.tzinfo is None:
            to = to.replace(tzinfo=timezone.utc)
        return to.timestamp()
    if isinstance(to, bool) or not isinstance(to, (int, float)):
        raise ConfigurationError(f"rewind to= must be a datetime or epoch seconds, got {to!r}")
    return float(to)


async def rewind(
    transport: Transport, scheme: str, topic: str, group: str, since: float, *, dry_run: bool
) -> int | None:
    """Move ``group`` back on ``topic`` to ``since``; how many messages it will consume again
    (``None``: the broker cannot tell)."""
    if not transport.capabilities.rewind or not isinstance(transport, SupportsRewind):
        raise UnsupportedFeatureError(
            f"the {scheme}:// backend cannot rewind a consumer group as configured "
            "(Capabilities.rewind); docs/operations.md, 'Rewinding a consumer group', lists the "
            "backends and settings that can"
        )
    return await transport.rewind(topic, group, since, dry_run=dry_run)
