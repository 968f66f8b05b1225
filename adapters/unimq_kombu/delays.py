"""Delayed messages on Redis, which has no native delay: a sorted set scored by due time.

``publish`` adds the message to ``unimq.delayed``; every connected unimq process moves due
ones to their topic from its publisher thread (see :func:`move_due`).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from unimq.transport import OutgoingMessage

DELAYED_KEY = "unimq.delayed"
BATCH = 200


def encode(message: OutgoingMessage) -> str:
    return json.dumps(
        {
            "n": uuid.uuid4().hex,  # two equal messages are two members
            "t": message.topic,
            "b": base64.b64encode(message.body).decode(),
            "h": message.headers,
            "k": message.key,
        }
    )


def decode(member: str | bytes) -> OutgoingMessage:
    data = json.loads(member)
    return OutgoingMessage(
        topic=data["t"], body=base64.b64decode(data["b"]), headers=data["h"], key=data["k"]
    )


def hold(client: Any, message: OutgoingMessage, deliver_at: float) -> None:
    client.zadd(DELAYED_KEY, {encode(message): deliver_at})


LEASE_SECONDS = 30.0
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[3], member) end
return due
"""


def move_due(client: Any, publish: Callable[[OutgoingMessage], None]) -> int:
    """Publish the due messages; how many it moved.

    Movers in several processes need no lock: one script claims the due messages by
    rescoring them ``LEASE_SECONDS`` ahead, so no other mover sees them, and each is removed
    only after it was published. A mover that dies after claiming leaves its messages due
    again when the lease ends: at least once, never lost.
    """
    now = time.time()
    claimed = client.eval(_CLAIM, 1, DELAYED_KEY, now, BATCH, now + LEASE_SECONDS)
    for member in claimed:
        publish(decode(member))
        client.zrem(DELAYED_KEY, member)
    return len(claimed)
