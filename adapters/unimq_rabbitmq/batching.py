"""Frames produced during one event-loop turn, written to the connection as one.

Why: aiormq sends every method through the connection's write queue on its own, and its
``basic_publish`` and ``basic_ack`` wait until the writer task has written and drained that one
frame. Concurrent publishers and handlers then go through one at a time, each with its own
chain of task wake-ups and its own ``send`` system call. On the 2-core benchmark machine that
per-message cost, not RabbitMQ, set the publish and consume rates: client, broker and kernel
compete for the same cores. A batch collects what is ready in one loop turn and hands the
writer a single buffer (see docs/backends/rabbitmq.md, "Publishing and acking in batches").

Order is kept: batches reach the write queue in the order they were flushed, and while a full
write queue holds one back, what arrives meanwhile waits for the next flush.

A flush runs from the event loop (a callback at the end of the turn), where an exception would
reach only the loop's exception handler and leave the items' waiters hanging. So subclasses
encode what can fail (a message pamqp refuses) when an item is added, in the caller's task, and
``_payload`` only joins bytes; should it fail all the same, the batch's items are failed with
the error (``_failed``) and nothing escapes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Generic, TypeVar

from aiormq.abc import ChannelFrame

logger = logging.getLogger("unimq.rabbitmq")

Item = TypeVar("Item")


#: Pending bytes that are written at once instead of at the end of the loop turn: a batch of
#: large messages would otherwise be copied into one buffer of up to ``publish_window`` bodies.
FLUSH_BYTES = 128 * 1024


class TurnBatch(Generic[Item]):
    """Collects items for one aiormq channel and writes their frames once per loop turn."""

    def __init__(self, channel: Any) -> None:
        self.channel: Any = channel  # an aiormq.Channel: its write queue is not in the ABC
        self._pending: list[Item] = []
        self._pending_bytes = 0
        self._scheduled = False  # a flush at the end of this loop turn is on its way
        self._blocked = False  # a full write queue holds a batch back; the next waits for it

    def _add(self, item: Item, size: int = 0) -> None:
        self._pending.append(item)
        self._pending_bytes += size
        if self._blocked:
            return  # goes out right after the batch being held back
        if self._pending_bytes >= FLUSH_BYTES:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._end_of_turn)

    def _payload(self, items: list[Item]) -> bytes:
        """The encoded frames of ``items`` (the channel is open); called once per flush, in
        order. Empty when there is nothing to write."""
        raise NotImplementedError

    def _undeliverable(self, items: list[Item]) -> None:
        """The channel closed before ``items`` could be written."""
        raise NotImplementedError

    def _failed(self, items: list[Item], error: Exception) -> None:
        """``_payload`` raised: ``items`` were not written (a bug; must not raise)."""
        raise NotImplementedError

    def _end_of_turn(self) -> None:
        self._scheduled = False
        if not self._blocked:
            self._flush()

    def _flush(self) -> None:
        items, self._pending, self._pending_bytes = self._pending, [], 0
        if not items:
            return
        channel = self.channel
        if channel.is_closed:
            self._undeliverable(items)
            return
        try:
            payload = self._payload(items)
        except Exception as exc:
            logger.exception("could not write %d frame(s) on %r", len(items), channel)
            self._failed(items, exc)
            return
        if not payload:
            return
        frame = ChannelFrame(payload=payload, should_close=False)
        try:
            channel.write_queue.put_nowait(frame)
        except asyncio.QueueFull:  # the writer is behind: wait for room, keep the order
            self._blocked = True
            channel.create_task(self._put_then_flush(frame))

    async def _put_then_flush(self, frame: ChannelFrame) -> None:
        try:
            await self.channel.write_queue.put(frame)
        finally:
            self._blocked = False
            self._flush()  # what arrived meanwhile (on a closed channel: reported undeliverable)
