"""``memory://[NAME]``: the in-process transport, behind the same SPI as every broker adapter."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from ..clock import Clock
from ..errors import ConfigurationError, NotConnectedError
from ..transport import Capabilities, OutgoingMessage, SubscriptionSpec, TransportContext
from ..url import BrokerURL
from .hub import GroupQueue, Hub, StoredMessage, named_hub

#: A receiver that finds messages queued yields to the event loop once every this many.
YIELD_EVERY = 64

CAPABILITIES = Capabilities(
    max_delay=None, ordering=True, broadcast=True, durable=False, max_message_size=None, rewind=True
)


class StoredView:
    """The read-only side of a delivery over a :class:`StoredMessage` (a held dead letter's;
    a :class:`MemoryDelivery` copies the four it is read for)."""

    __slots__ = ("_message",)

    def __init__(self, message: StoredMessage) -> None:
        self._message = message

    @property
    def topic(self) -> str:
        return self._message.topic

    @property
    def key(self) -> str | None:
        return self._message.key

    @property
    def headers(self) -> Mapping[str, str]:
        return self._message.headers

    @property
    def body(self) -> bytes:
        return self._message.body

    @property
    def native_id(self) -> str:
        return self._message.native_id


class MemoryDelivery:
    """A delivery of a :class:`StoredMessage` to one subscription.

    ``topic``, ``key``, ``headers`` and ``body`` are plain attributes rather than properties
    over the stored message (as :class:`StoredView` has them): the pipeline reads each once or
    twice per delivery, and a property costs about five times an attribute read (a tenth of a
    batch's cost per message on this transport)."""

    __slots__ = (
        "_message",
        "_parked",
        "_settled",
        "_subscription",
        "_waiting",
        "body",
        "headers",
        "key",
        "topic",
    )

    def __init__(self, message: StoredMessage, subscription: MemorySubscription) -> None:
        self._message = message
        self.topic = message.topic
        self.key = message.key
        self.headers = message.headers
        self.body = message.body
        self._subscription = subscription
        self._settled = False
        self._waiting = False  # the pipeline holds it on the clock (SupportsPark)
        self._parked = False  # ... and it is still unsettled: counted as delayed, not in flight

    @property
    def native_id(self) -> str:
        return self._message.native_id

    async def ack(self) -> None:
        if not self._settled:
            self._settled = True
            if self._parked:
                self._parked = False
                self._subscription._hub.parked -= 1
            self._subscription.settled(self)

    @classmethod
    async def ack_many(cls, deliveries: Sequence[MemoryDelivery]) -> None:
        """``SupportsAckMany``: ``ack`` for each, without an await (or a call) per delivery."""
        for delivery in deliveries:
            if not delivery._settled:
                delivery._settled = True
                subscription = delivery._subscription
                if delivery._parked:
                    delivery._parked = False
                    subscription._hub.parked -= 1
                unsettled = subscription._unsettled  # (subscription.settled, inline)
                if delivery in unsettled:
                    unsettled.discard(delivery)
                    subscription._hub.unsettled -= 1

    def park(self) -> None:
        """Held by the pipeline on the clock: delayed, not in flight (``SupportsPark``).

        Also counted while the delivery is settled already (a duplicate's settlement waiting
        to try again): whatever waits on the clock may hold up ready messages behind it."""
        if not self._waiting:
            self._waiting = True
            hub = self._subscription._hub
            hub.clock_waiters += 1
            if not self._settled:
                self._parked = True
                hub.parked += 1

    def unpark(self) -> None:
        if self._waiting:
            self._waiting = False
            hub = self._subscription._hub
            hub.clock_waiters -= 1
            if self._parked:
                self._parked = False
                hub.parked -= 1


class MemorySubscription:
    def __init__(self, queue: GroupQueue) -> None:
        self._queue = queue
        self._hub = queue.hub
        self._unsettled: set[MemoryDelivery] = set()
        self._waiting: set[asyncio.Future[StoredMessage | None]] = set()
        self._stopped = False
        self._streak = 0
        self._activated = asyncio.Event()
        queue.subscriptions.append(self)
        if not queue.ordered or queue.active is None:
            queue.active = self
            self._activated.set()

    async def receive(self) -> MemoryDelivery | None:
        if self._stopped:
            return None
        queue = self._queue
        if not self._activated.is_set():  # ordered group, another subscription is active
            await self._activated.wait()
            if self._stopped:
                return None
        if queue.items:
            self._streak += 1
            if self._streak >= YIELD_EVERY:
                # Never awaiting while items are queued would starve the event loop (a handler
                # that publishes to its own topic keeps the queue full): yield now and then.
                self._streak = 0
                await asyncio.sleep(0)
                if self._stopped:
                    return None
                if not queue.items:
                    return await self.receive()
            message = queue.items.popleft()
            self._hub.ready -= 1
            self._hub.unsettled += 1
        else:
            waiter: asyncio.Future[StoredMessage | None] = (
                asyncio.get_running_loop().create_future()
            )
            queue.waiters.append(waiter)
            self._waiting.add(waiter)
            try:
                received = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                    self._hub.unsettled -= 1  # handed to us as we were cancelled: give it back
                    queue.push_front(waiter.result())  # type: ignore[arg-type]
                raise
            finally:
                self._waiting.discard(waiter)
            if received is None:
                return None
            message = received
        delivery = MemoryDelivery(message, self)
        self._unsettled.add(delivery)
        return delivery

    async def receive_many(self, max_n: int) -> list[MemoryDelivery]:
        """``SupportsReceiveMany``: the first delivery as ``receive`` gives it, then up to
        ``max_n - 1`` more of those already queued, without awaiting."""
        first = await self.receive()
        if first is None:
            return []
        batch = [first]
        items = self._queue.items
        take = min(max_n - 1, len(items))
        if take > 0 and not self._stopped:
            hub = self._hub
            hub.ready -= take
            hub.unsettled += take
            popleft = items.popleft
            more = [MemoryDelivery(popleft(), self) for _ in range(take)]
            self._unsettled.update(more)
            batch.extend(more)
        return batch

    def settled(self, delivery: MemoryDelivery) -> None:
        if delivery in self._unsettled:
            self._unsettled.discard(delivery)
            self._hub.unsettled -= 1

    async def stop(self) -> None:
        self._stopped = True
        self._activated.set()
        for waiter in list(self._waiting):
            if not waiter.done():
                waiter.set_result(None)

    async def close(self) -> None:
        await self.stop()
        queue = self._queue
        # Unsettled deliveries go back to the front of the queue, in their original order.
        for delivery in sorted(self._unsettled, key=_arrival, reverse=True):  # newest first
            if delivery._parked:  # given back: no longer this subscription's to count
                delivery._parked = False
                self._hub.parked -= 1
            delivery._settled = True
            self._hub.unsettled -= 1
            queue.push_front(delivery._message)
        self._unsettled.clear()
        if self in queue.subscriptions:
            queue.subscriptions.remove(self)
        if queue.active is self:
            queue.active = queue.subscriptions[0] if queue.subscriptions else None
            if queue.active is not None:
                queue.active._activated.set()
        if queue.broadcast and not queue.subscriptions:
            self._hub.drop_group(queue)


def _arrival(delivery: MemoryDelivery) -> int:
    return delivery._message.sequence


class MemoryTransport:
    """Shares a :class:`Hub` with every transport of the same ``memory://NAME`` in the process."""

    capabilities = CAPABILITIES

    def __init__(
        self, url: BrokerURL, options: Mapping[str, Any], context: TransportContext
    ) -> None:
        if options:
            raise ConfigurationError(
                f"memory:// takes no transport options, got {', '.join(sorted(options))}"
            )
        name = (url.host or "") + (url.path.strip("/") if url.path else "")
        self.name = name or None
        self._clock: Clock = context.clock
        if self.name is None:
            self.hub = Hub(None, self._clock)
        else:
            self.hub = named_hub(self.name, self._clock)
            if self.hub.clock is not self._clock:
                raise ConfigurationError(
                    f"memory://{self.name} already runs on another clock; pass the same clock to "
                    "every Broker that shares this name"
                )
        self._connected = False
        self._subscriptions: list[MemorySubscription] = []

    async def connect(self) -> None:
        if not self._connected:
            # A VirtualClock's advance() waits for the memory backends on it to be idle: only
            # while this transport is connected (a closed one must not hold later advances up).
            register = getattr(self._clock, "register_idle_probe", None)
            if register is not None:
                register(self.hub.wait_idle)
        self._connected = True

    async def close(self) -> None:
        for subscription in self._subscriptions:
            await subscription.close()
        self._subscriptions.clear()
        if self._connected:
            unregister = getattr(self._clock, "unregister_idle_probe", None)
            if unregister is not None:
                unregister(self.hub.wait_idle)
        self._connected = False

    async def publish(self, message: OutgoingMessage) -> None:
        if not self._connected:
            raise NotConnectedError("the memory transport is not connected")
        hub = self.hub
        stored = StoredMessage(
            message.topic,
            message.key,
            message.headers,
            message.body,
            hub.next_sequence(),
        )
        deliver_at = message.deliver_at
        if deliver_at is not None and deliver_at > self._clock.now():
            hub.schedule(stored, deliver_at)
        else:
            hub.route(stored)

    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> list[BaseException | None]:
        """``SupportsPublishMany``: every message in order, without a coroutine per message."""
        if not self._connected:
            raise NotConnectedError("the memory transport is not connected")
        hub = self.hub
        now = self._clock.now()
        for message in messages:
            stored = StoredMessage(
                message.topic, message.key, message.headers, message.body, hub.next_sequence()
            )
            deliver_at = message.deliver_at
            if deliver_at is not None and deliver_at > now:
                hub.schedule(stored, deliver_at)
            else:
                hub.route(stored)
        return [None] * len(messages)

    async def subscribe(self, spec: SubscriptionSpec) -> MemorySubscription:
        if not self._connected:
            raise NotConnectedError("the memory transport is not connected")
        queue = self.hub.group_queue(
            spec.topic, spec.group, broadcast=spec.broadcast, ordered=spec.ordered
        )
        subscription = MemorySubscription(queue)
        self._subscriptions.append(subscription)
        return subscription

    async def wait_idle(self) -> None:
        await self.hub.wait_idle()

    async def declare_topic(self, topic: str) -> None:
        self.hub.hold(topic)

    async def lag(self, topic: str, group: str) -> int | None:
        found = self.hub.topics.get(topic)
        queue = found.groups.get(group) if found is not None else None
        if queue is None:
            return None
        return len(queue.items) + sum(len(s._unsettled) for s in queue.subscriptions)

    async def backlog_age(self, topic: str, group: str) -> float | None:
        return self.hub.backlog_age(topic, group)

    async def rewind(
        self, topic: str, group: str, since: float, *, dry_run: bool = False
    ) -> int | None:
        """Queue again what the topic remembers (its last ``hub.HISTORY`` messages) from
        ``since`` on; a group the hub has never seen has nothing to rewind (``None``)."""
        if not self._connected:
            raise NotConnectedError("the memory transport is not connected")
        return self.hub.rewind(topic, group, since, dry_run=dry_run)

    async def open_dead_letters(self, topic: str) -> MemoryDeadLetters:
        if not self._connected:
            raise NotConnectedError("the memory transport is not connected")
        return MemoryDeadLetters(self.hub.hold(topic))


class MemoryHeldDelivery(StoredView):
    """A dead letter handed out by :class:`MemoryDeadLetters`; ``ack`` removes it."""

    __slots__ = ("_held",)

    def __init__(self, message: StoredMessage, held: dict[int, StoredMessage]) -> None:
        self._message = message
        self._held = held

    async def ack(self) -> None:
        self._held.pop(self._message.sequence, None)


class MemoryDeadLetters:
    """A pass over a held topic; messages stay in place until acked (nothing to give back)."""

    def __init__(self, held: dict[int, StoredMessage]) -> None:
        self._held = held
        self._pending = list(held)  # a snapshot: later arrivals are not part of this pass
        self._position = 0

    async def count(self) -> int:
        return len(self._held)

    async def next(self) -> MemoryHeldDelivery | None:
        while self._position < len(self._pending):
            sequence = self._pending[self._position]
            self._position += 1
            message = self._held.get(sequence)
            if message is not None:
                return MemoryHeldDelivery(message, self._held)
        return None

    async def close(self) -> None:
        self._pending = []
