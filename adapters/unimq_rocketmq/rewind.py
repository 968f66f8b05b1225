"""Moving a consumer group back in time, and the age of its backlog, over the admin protocol.

Rewind: per queue of the topic on every master, SEARCH_OFFSET_BY_TIMESTAMP gives the first
offset stored at or after the time (store timestamps, millisecond granularity); the count is
how far that is behind the group's consumer offset. The move itself is the broker's own
reset-offset-by-time (INVOKE_BROKER_TO_RESET_OFFSET, what ``mqadmin resetOffsetByTime`` sends),
which in RocketMQ 5 resets on the broker side (``useServerSideResetOffset``): the pop
consumers of the proxy pick the reset offset up on their next receive, running or not. Queues
the group already stands before are left alone (a rewind never skips forward).

Backlog age: PULL_MESSAGE of one message at the group's consumer offset, without committing
anything, in every queue where the group is behind; the message's born timestamp (the
producer's send time) of the oldest one gives the age.
"""

from __future__ import annotations

import asyncio
import struct
import time

from unimq.errors import ConnectionFailedError

from . import remoting
from .admin import QueueOffsets, RemotingAdmin

#: PULL_MESSAGE sysFlag: the subscription travels with the request (no online consumer needed);
#: no commit, no suspend.
_FLAG_SUBSCRIPTION = 0x4
#: Where a stored message's born timestamp sits (MessageDecoder: size, magic, body CRC, queue
#: id, flag, queue offset, physical offset, sysFlag).
_BORN_AT = 4 + 4 + 4 + 4 + 4 + 8 + 8 + 4


async def _queues(admin: RemotingAdmin, group: str, topic: str) -> list[QueueOffsets] | None:
    queues = [q for q in await admin.consume_stats(group, [topic]) if q.topic == topic]
    return queues or None


async def _offset_at(admin: RemotingAdmin, queue: QueueOffsets, epoch_ms: int) -> int:
    response = remoting.checked(
        await admin._call(
            queue.broker,
            remoting.SEARCH_OFFSET_BY_TIMESTAMP,
            {"topic": queue.topic, "queueId": str(queue.queue_id), "timestamp": str(epoch_ms)},
        ),
        f"SEARCH_OFFSET_BY_TIMESTAMP of {queue.topic!r}/{queue.queue_id}",
    )
    return int(response.ext_fields.get("offset") or 0)


async def rewind_group(
    admin: RemotingAdmin, group: str, topic: str, since: float, *, dry_run: bool
) -> int | None:
    """Reset ``group`` on ``topic`` to ``since``; how many messages it will consume again.
    ``None``: the topic has no queue with offsets of the group."""
    queues = await _queues(admin, group, topic)
    if queues is None:
        return None
    epoch_ms = int(since * 1000)
    targets = await asyncio.gather(*(_offset_at(admin, queue, epoch_ms) for queue in queues))
    again = sum(
        max(0, q.consumer_offset - target) for q, target in zip(queues, targets, strict=True)
    )
    if again and not dry_run:
        for broker in sorted({queue.broker for queue in queues}):
            remoting.checked(
                await admin._call(
                    broker,
                    remoting.INVOKE_BROKER_TO_RESET_OFFSET,
                    {
                        "topic": topic,
                        "group": group,
                        "timestamp": str(epoch_ms),
                        "isForce": "false",  # only back: queues already before it stay
                        "queueId": "-1",
                    },
                ),
                f"INVOKE_BROKER_TO_RESET_OFFSET of {group!r} on {topic!r} ({broker})",
            )
    return again


async def _born_at(admin: RemotingAdmin, group: str, queue: QueueOffsets) -> float | None:
    response = await admin._call(
        queue.broker,
        remoting.PULL_MESSAGE,
        {
            "consumerGroup": group,
            "topic": queue.topic,
            "queueId": str(queue.queue_id),
            "queueOffset": str(queue.consumer_offset),
            "maxMsgNums": "1",
            "sysFlag": str(_FLAG_SUBSCRIPTION),
            "commitOffset": "0",
            "suspendTimeoutMillis": "0",
            "subscription": "*",
            "subVersion": "0",
            "expressionType": "TAG",
        },
    )
    if response.code != remoting.SUCCESS or len(response.body) < _BORN_AT + 8:
        return None
    (born_ms,) = struct.unpack_from(">q", response.body, _BORN_AT)
    return born_ms / 1000 if born_ms > 0 else None


async def backlog_age(admin: RemotingAdmin, group: str, topic: str) -> float | None:
    """Seconds since the oldest message ``group`` has not received was born; ``0.0`` with no
    backlog, ``None`` for an unknown topic or when no message could be read."""
    try:
        queues = await _queues(admin, group, topic)
    except remoting.RemotingError as exc:
        raise ConnectionFailedError(f"could not read the offsets of {group!r}: {exc}") from None
    if queues is None:
        return None
    behind = [queue for queue in queues if queue.backlog > 0]
    if not behind:
        return 0.0
    born = [t for t in await asyncio.gather(*(_born_at(admin, group, q) for q in behind)) if t]
    return max(0.0, time.time() - min(born)) if born else None
