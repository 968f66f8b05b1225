"""Delayed messages on Redis, which has no native delay: a sorted set scored by due time.

``publish`` adds the message to ``unimq.delayed``; every connected unimq process moves due
ones to their topic from its publisher thread, one process at a time (a short Redis lock).
A message is removed from the set only after it was published, so a process that dies in
between leaves it for the next mover: at least once, never lost.
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
LOCK_KEY = "unimq.delayed.lock"
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


LOCK_MS = 1000
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def move_due(client: Any, publish: Callable[[OutgoingMessage], None], token: str) -> int:
    """Publish the due messages (if this process holds the mover lock); how many it moved.

    The lock is short (a mover that died blocks the others for a second at most) and is
    given up by :func:`release` when a transport closes.
    """
    if not client.set(LOCK_KEY, token, nx=True, px=LOCK_MS):
        if _text(client.get(LOCK_KEY)) != token:
            return 0
        client.pexpire(LOCK_KEY, LOCK_MS)
    due = client.zrangebyscore(DELAYED_KEY, "-inf", time.time(), start=0, num=BATCH)
    for member in due:
        publish(decode(member))
        client.zrem(DELAYED_KEY, member)
    return len(due)


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def release(client: Any, token: str) -> None:
    client.eval(_RELEASE, 1, LOCK_KEY, token)
