"""kombu's Redis transport with an atomic take: a popped message is recorded as unacked in the
same server-side step, so a consumer killed at any moment loses nothing.

kombu's own consumer pops a message with ``BRPOP`` and only then, in a second round trip,
records it in its ``unacked`` hash and ``unacked_index`` sorted set (``QoS.append``). A
SIGKILL between the two loses that message: it is neither in the queue nor in the hash that
kombu's visibility-timeout restore reads. This channel instead

1. waits with ``BLMOVE key key RIGHT RIGHT timeout``: it returns when the queue holds a message
   and puts that message straight back where it was (a blocking peek: nothing leaves the
   queue, the order is kept), then
2. takes messages with a Lua script that pops them and writes kombu's unacked records (the
   same hash entry and index score ``QoS.append`` writes) in one atomic step: as many as the
   prefetch window still allows (``QoS.can_consume_max_estimate``, at most :data:`BULK_MAX`),
   so one wait and one script serve a whole window of messages instead of one each.

A consumer killed after step 1 leaves the message in the queue; after step 2 every message the
script popped is in kombu's unacked hash, and kombu's own restore (``visibility_timeout``,
``restore_unacked`` when a channel closes) gives it back, unchanged. ``QoS.append`` then only
does kombu's in-process bookkeeping for messages the script recorded. Two consumers woken for
one message both run the script; one gets it, the other waits again.

Used only where it is exact: a channel with a ``global_keyprefix`` or a no-ack consumer falls
back to kombu's own ``BRPOP`` (the adapter sets neither). Needs Redis 6.2 or later (``BLMOVE``).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty
from typing import Any

# kombu ships only partial annotations: its modules are typed loosely here.
kombu_redis: Any = importlib.import_module("kombu.transport.redis")
virtual: Any = importlib.import_module("kombu.transport.virtual")
bytes_to_str: Any = importlib.import_module("kombu.utils.encoding").bytes_to_str
loads: Any = importlib.import_module("kombu.utils.json").loads

BULK_MAX = 100  # messages one take may pop when no prefetch limit bounds it

# KEYS: the queue keys in priority order, then the unacked hash and the unacked index.
# ARGV: the time to score the messages with (the client's clock, as kombu's QoS.append uses),
# then the most messages to take. Returns {key index, message, key index, message, ...} in
# the order taken (highest priority first, oldest first), empty when every key is empty.
TAKE = """
local n = #KEYS - 2
local limit = tonumber(ARGV[2])
local taken = {}
for i = 1, n do
  while #taken < 2 * limit do
    local item = redis.call('RPOP', KEYS[i])
    if not item then break end
    local properties = cjson.decode(item)['properties']
    local info, tag = properties['delivery_info'], properties['delivery_tag']
    redis.call('ZADD', KEYS[n + 2], ARGV[1], tag)
    redis.call('HSET', KEYS[n + 1], tag,
      '[' .. item .. ',' .. cjson.encode(info['exchange']) .. ','
      .. cjson.encode(info['routing_key']) .. ']')
    taken[#taken + 1] = i
    taken[#taken + 1] = item
  end
end
return taken
"""


class AtomicQoS(kombu_redis.QoS):  # type: ignore[misc]
    """kombu's Redis QoS, minus the unacked writes the take script already made."""

    def append(self, message: Any, delivery_tag: Any) -> None:
        recorded = self.channel._recorded_tags
        if delivery_tag in recorded:
            recorded.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)

    def ack_many(self, delivery_tags: list[Any]) -> None:
        """Ack several messages in one pipelined round trip (kombu's ``ack`` sends one each)."""
        with self.pipe_or_acquire() as pipe:
            for tag in delivery_tags:
                pipe.zrem(self.unacked_index_key, tag).hdel(self.unacked_key, tag)
            pipe.execute()
        for tag in delivery_tags:
            virtual.QoS.ack(self, tag)


class AtomicChannel(kombu_redis.Channel):  # type: ignore[misc]
    """kombu's Redis channel whose consumer takes messages with :data:`TAKE`."""

    QoS = AtomicQoS
    _pool_client: Any = None  # see conn_or_acquire (a class default: kombu's __init__ may call it)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._recorded_tags: set[str] = set()
        self._take_script: Any = None
        self._take_keys: list[tuple[str, str]] = []  # (key, queue) for the pending wait
        self._no_ack_consumers = 0

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if no_ack:  # its messages must not be recorded as unacked: kombu's BRPOP serves it
            self._no_ack_consumers += 1
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def _atomic(self) -> bool:
        return not self.global_keyprefix and not self._no_ack_consumers and self.ack_emulation

    def _brpop_start(self, timeout: float | None = None) -> None:
        if not self._atomic():
            super()._brpop_start(timeout)
            return
        if timeout is None:
            timeout = self.brpop_timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        self._take_keys = [
            (self._q_for_pri(queue, pri), queue) for pri in self.priority_steps for queue in queues
        ]
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()
        key = self._take_keys[0][0]
        # The wait reply must be read with the BRPOP handler, which kombu's poller calls.
        self.client.connection.send_command("BLMOVE", key, key, "RIGHT", "RIGHT", timeout or 0)

    def _brpop_read(self, **options: Any) -> bool:
        if not self._take_keys:
            return bool(super()._brpop_read(**options))
        keys, self._take_keys = self._take_keys, []
        try:
            try:
                self.client.parse_response(self.client.connection, "BLMOVE", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            # Whatever the wait returned (a message, or nothing when it timed out), the take
            # looks at every key: a message in a key the wait did not watch is found here.
            taken = self._take([key for key, _ in keys], self._window())
            if not taken:
                raise Empty()
            messages = [
                (keys[int(index) - 1][1], loads(bytes_to_str(item)))
                for index, item in zip(taken[::2], taken[1::2], strict=True)
            ]
            for _, message in messages:
                self._recorded_tags.add(message["properties"]["delivery_tag"])
            self._queue_cycle.rotate(messages[-1][0])
            self._deliver_all(messages)
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()

    def _window(self) -> int:
        """How many messages one take may pop: what the prefetch window still allows."""
        room = self.qos.can_consume_max_estimate()
        return BULK_MAX if room is None else max(1, min(int(room), BULK_MAX))

    def _deliver_all(self, messages: list[tuple[str, Any]]) -> None:
        """Hand every taken message to kombu; if a callback raises, the rest still enter
        kombu's QoS (as unacked), so closing the channel restores them at once."""
        delivered = 0
        try:
            for queue, message in messages:
                delivered += 1
                self.connection._deliver(message, queue)
        finally:
            for _, message in messages[delivered:]:
                kept = self.Message(message, channel=self)
                self.qos.append(kept, kept.delivery_tag)

    def _take(self, keys: list[str], limit: int) -> list[Any]:
        with self.conn_or_acquire() as client:
            if self._take_script is None:
                self._take_script = client.register_script(TAKE)
            return list(
                self._take_script(
                    keys=[*keys, self.unacked_key, self.unacked_index_key],
                    args=[repr(time.time()), limit],
                    client=client,
                )
            )

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        """kombu's, reusing one client: kombu builds a new redis-py client (and its table of
        reply parsers) for every command it sends this way, a third of a take's CPU time.
        The client only borrows connections from the channel's pool, so one serves all."""
        if client:
            yield client
            return
        cached = self._pool_client
        if cached is None or cached.connection_pool is not self.pool:
            cached = self._pool_client = self._create_client()
        yield cached

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        """A get that acks later is taken atomically too (the first group inheriting the
        messages published before it uses it)."""
        if no_ack or not self._atomic():
            return super().basic_get(queue, no_ack=no_ack, **kwargs)
        taken = self._take([self._q_for_pri(queue, pri) for pri in self.priority_steps], 1)
        if not taken:
            return None
        message = self.Message(loads(bytes_to_str(taken[1])), channel=self)
        self._recorded_tags.add(message.delivery_tag)
        self.qos.append(message, message.delivery_tag)
        return message


class AtomicTransport(kombu_redis.Transport):  # type: ignore[misc]
    """kombu's Redis transport with :class:`AtomicChannel`; passed to ``kombu.Connection``
    as its ``transport`` (kombu takes a class there)."""

    Channel = AtomicChannel
