"""One batch handler call and its settlement: a batch that succeeds is settled in one step.

A batch is parallel lists (the deliveries, and only the lists its handler takes: messages,
decoded bodies) plus a :class:`~unimq.delivery.settle.Settlement` for a message that needs one
of its own: it failed, its handler settled it itself (``message.ack()/nack()/reject()``), it is
retried in place, or the subscriber keeps a mark per message (``idempotent=True``). A batch that
succeeded is acked with one ``ack_many`` per delivery class (:func:`settle.ack_deliveries`) and
creates no per-message object besides the deliveries and the handler's own lists.

That matters twice: the work per message, and the garbage collector. A Settlement per message,
in a reference cycle with its Message (message -> settler -> message), kept 500 objects per batch
alive across young collections and left the cycles to the collector; about a third of a batch's
time went to collections (issue 14). The batch is the settler of its messages instead, and
:meth:`Batch.close` drops its lists when the batch is settled, so nothing is left in a cycle.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..envelope import read
from ..message import Message
from ..transport import Delivery
from .host import Host
from .outcome import ACK, Outcome
from .settle import Settlement, ack_deliveries


class Batch:
    """The messages of one handler call, and the settler (:class:`~unimq.message.Settler`) of
    its ``Message`` objects."""

    __slots__ = ("_index", "bodies", "deliveries", "host", "messages", "settlements")

    def __init__(self, host: Host, takes_messages: bool, takes_bodies: bool) -> None:
        self.host = host
        self.deliveries: list[Delivery] = []
        self.messages: list[Message] | None = [] if takes_messages else None
        self.bodies: list[Any] | None = [] if takes_bodies else None
        # index -> the Settlement of a message that needed one (made by ``settlement``)
        self.settlements: dict[int, Settlement] = {}
        self._index: dict[int, int] | None = None  # id(message) -> index, made on demand

    @classmethod
    def again(
        cls, host: Host, settlements: list[Settlement], takes_messages: bool, takes_bodies: bool
    ) -> Batch:
        """A batch of messages retried in place: their settlements carry their attempts."""
        batch = cls(host, takes_messages, takes_bodies)
        batch.deliveries = [s.delivery for s in settlements]
        if takes_messages:
            batch.messages = [s.message for s in settlements]  # type: ignore[misc]
        if takes_bodies:
            batch.bodies = [s.body for s in settlements]
        batch.settlements = dict(enumerate(settlements))
        return batch

    def add(self, delivery: Delivery, message: Message | None, body: Any) -> None:
        """One more admitted delivery, with what the handler takes of it."""
        self.deliveries.append(delivery)
        if self.messages is not None:
            self.messages.append(message)  # type: ignore[arg-type]
        if self.bodies is not None:
            self.bodies.append(body)

    def __len__(self) -> int:
        return len(self.deliveries)

    def settlement(self, index: int) -> Settlement:
        """The Settlement of message ``index``, made on first use. Its message settles through
        it from then on."""
        settlement = self.settlements.get(index)
        if settlement is None:
            delivery = self.deliveries[index]
            settlement = self.settlements[index] = Settlement(self.host, delivery, read(delivery))
            if self.messages is not None:
                message = settlement.message = self.messages[index]
                message._settler = settlement
            if self.bodies is not None:
                settlement.body = self.bodies[index]
        return settlement

    def every_settlement(self) -> list[Settlement]:
        """A Settlement per message (the general way: idempotent, or retried in place)."""
        return [self.settlement(index) for index in range(len(self.deliveries))]

    async def ack_all(self, failed: dict[int, Outcome] | None = None) -> None:
        """Ack every message but the ``failed`` ones, in one ``ack_many`` where the deliveries
        have it; only for a subscriber whose ack is only an ack (``host.plain_ack``). A message
        its handler settled itself is left as it is; one that cannot be acked at once is acked
        on its own, and retried, by its Settlement."""
        settlements = self.settlements
        deliveries = self.deliveries
        one_by_one: list[Settlement] = []
        if settlements or failed:
            skip = set(settlements)
            if failed:
                skip.update(failed)
            for index, settlement in settlements.items():
                if not settlement.settled and (not failed or index not in failed):
                    one_by_one.append(settlement)  # (a message.nack() retried in place)
            deliveries = [d for index, d in enumerate(deliveries) if index not in skip]
        left = await ack_deliveries(deliveries)
        if left:
            where = {id(d): index for index, d in enumerate(self.deliveries)}
            one_by_one.extend(self.settlement(where[id(d)]) for d in left)
        for settlement in one_by_one:
            await settlement.carry_out(ACK)

    def close(self) -> None:
        """Settled: forget the messages (a Message still held by the handler settles nothing
        more), which also ends the batch <-> message reference cycle, and the bodies. Not
        for ``ack="manual"``: its handler may settle its messages after it returned."""
        self.messages = None
        self.bodies = None
        self._index = None

    def close_settlements(self) -> None:
        """The batch's pipeline is done: its Settlements let go of their messages
        (:meth:`Settlement.close`), ending each Settlement <-> Message cycle. Safe for
        ``ack="manual"`` too: a message settles through its Settlement, which it still holds."""
        for settlement in self.settlements.values():
            settlement.close()

    # -- the Settler of the batch's messages (a message not yet with a Settlement of its own)

    def _find(self, message: Message) -> Settlement | None:
        messages = self.messages
        if messages is None:
            return None  # the batch is settled: so is the message
        index = self._index
        if index is None:
            index = self._index = {id(m): i for i, m in enumerate(messages)}
        found = index.get(id(message))
        return None if found is None else self.settlement(found)

    async def ack(self, message: Message) -> None:
        settlement = self._find(message)
        if settlement is not None:
            await settlement.ack(message)

    async def nack(self, message: Message, delay: float | None) -> None:
        settlement = self._find(message)
        if settlement is not None:
            await settlement.nack(message, delay)

    async def reject(self, message: Message, reason: str) -> None:
        settlement = self._find(message)
        if settlement is not None:
            await settlement.reject(message, reason)


async def settle_failures(batch: Batch, failed: dict[int, Outcome]) -> None:
    """The failed messages of a batch, each by its Settlement, concurrently (their retry and
    dead-letter copies go out together)."""
    await asyncio.gather(*(batch.settlement(i).carry_out(o) for i, o in failed.items()))
