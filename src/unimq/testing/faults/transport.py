"""A transport wrapper that injects seeded faults into any :class:`~unimq.transport.Transport`.

``wrap(transport, faults)`` returns a transport with the same capabilities and the same optional
SPI (``wait_idle``, ``declare_topic``, ``lag``, ``open_dead_letters``) that fails, stalls,
loses acks, duplicates and reorders as :class:`~.plan.FaultPlan` says, and tells an
:class:`Observer` what really reached the broker (so the runner can check "a copy was
published before the original was acked"). ``inject(broker, faults)`` puts it under a Broker
before ``start()``.

Reordering stays within what a broker may do: a delivery is only ever held back behind one of
another key on an ordered subscription, and a delivery that an inner ``receive()`` returned is
handed out by that same call, with no await in between, so the order in which ``receive()``
calls return (which is all the core can see) is the broker's order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

from ...broker import Broker
from ...errors import ConnectionFailedError, PublishError
from ...transport import (
    Delivery,
    OutgoingMessage,
    Subscription,
    SubscriptionSpec,
    SupportsDeadLetters,
    SupportsDeclareTopic,
    SupportsLag,
    SupportsPark,
    SupportsWaitIdle,
    Transport,
)
from .plan import Faults


class Observer(Protocol):
    """What the wrapper reports; every call happens after the broker really did it."""

    def published(self, message: OutgoingMessage) -> None: ...

    def acked(self, delivery: Delivery) -> None: ...


class _NoObserver:
    def published(self, message: OutgoingMessage) -> None:
        pass

    def acked(self, delivery: Delivery) -> None:
        pass


class FaultyDelivery:
    """One hand-out of an inner delivery (a duplicate or a redelivery is another hand-out)."""

    __slots__ = ("_inner", "_parked", "_subscription")

    def __init__(self, inner: Delivery, subscription: FaultySubscription) -> None:
        self._inner = inner
        self._subscription = subscription
        self._parked = False

    # The optional delivery SPI is passed through: ``park``/``unpark`` (SupportsPark) per
    # hand-out, counted per inner delivery since a duplicate shares it; ``revoked``
    # (SupportsRevocation) as the inner delivery says.

    def park(self) -> None:
        if not self._parked:
            self._parked = True
            self._subscription.parks(self._inner, +1)

    def unpark(self) -> None:
        if self._parked:
            self._parked = False
            self._subscription.parks(self._inner, -1)

    @property
    def revoked(self) -> bool:
        return bool(getattr(self._inner, "revoked", False))

    @property
    def topic(self) -> str:
        return self._inner.topic

    @property
    def key(self) -> str | None:
        return self._inner.key

    @property
    def headers(self) -> Mapping[str, str]:
        return self._inner.headers

    @property
    def body(self) -> bytes:
        return self._inner.body

    @property
    def native_id(self) -> str:
        return self._inner.native_id

    async def ack(self) -> None:
        subscription = self._subscription
        faults = subscription.faults
        await faults.stall()
        self.unpark()
        if faults.chance("ack_lost"):
            subscription.give_back(self._inner)  # as after a dropped connection: comes again
            return
        await self._inner.ack()
        subscription.observer.acked(self._inner)


class FaultySubscription:
    def __init__(
        self, inner: Subscription, spec: SubscriptionSpec, faults: Faults, observer: Observer
    ) -> None:
        self.inner = inner
        self.spec = spec
        self.faults = faults
        self.observer = observer
        self._ready: deque[Delivery] = deque()  # to hand out before pulling from the broker
        self._wakers: set[asyncio.Future[None]] = set()
        self._parks: dict[int, int] = {}
        self._buffered: dict[int, Delivery] = {}  # parked for sitting in _ready (see below)
        self._stopped = False

    def parks(self, delivery: Delivery, change: int) -> None:
        """Park the inner delivery while any hand-out of it is parked."""
        key = id(delivery)
        before = self._parks.get(key, 0)
        after = before + change
        if after:
            self._parks[key] = after
        else:
            self._parks.pop(key, None)
        if isinstance(delivery, SupportsPark):
            if before == 0 and after > 0:
                delivery.park()
            elif before > 0 and after == 0:
                delivery.unpark()

    def give_back(self, delivery: Delivery) -> None:
        """Hand ``delivery`` out again on a later ``receive()`` (lost ack, duplicate)."""
        self._ready.append(delivery)
        self._sync_buffer()
        self._wake()

    def _sync_buffer(self) -> None:
        """A delivery waiting in ``_ready`` is, for ``drain`` and ``VirtualClock.advance``, what
        a message in a broker's prefetch buffer is: ready, not in flight. It is parked while it
        waits there (the memory hub counts a ready message as work only while nothing in flight
        waits on the clock), so a held-back delivery never stops a virtual clock."""
        waiting = {id(delivery): delivery for delivery in self._ready}
        for key, delivery in list(self._buffered.items()):
            if key not in waiting:
                del self._buffered[key]
                self.parks(delivery, -1)
        for key, delivery in waiting.items():
            if key not in self._buffered:
                self._buffered[key] = delivery
                self.parks(delivery, +1)

    def _wake(self) -> None:
        for waker in self._wakers:
            if not waker.done():
                waker.set_result(None)

    async def receive(self) -> FaultyDelivery | None:
        faults = self.faults
        await faults.stall()  # only before taking anything: never between taking and handing out
        if faults.chance("receive_error"):
            raise ConnectionFailedError("injected fault: receive failed")
        while True:
            if self._stopped:
                return None
            if self._ready:
                delivery = self._ready.popleft()
            else:
                pulled = await self._pull()
                if pulled is None:
                    continue
                delivery = self._keep_key_order(pulled)
            if faults.chance("reorder"):
                if not self.spec.ordered and not self._ready:
                    await self._pull_another()  # unordered: anything may overtake anything
                delivery = self._reorder(delivery)
            if faults.chance("redeliver"):
                self.give_back(delivery)
            self._sync_buffer()
            return FaultyDelivery(delivery, self)

    def _keep_key_order(self, pulled: Delivery) -> Delivery:
        """On an ordered subscription, a delivery waiting here (held back, given back) goes
        before a newer one of its key just pulled from the broker."""
        if self.spec.ordered and pulled.key is not None:
            for index, waiting in enumerate(self._ready):
                if waiting.key == pulled.key:
                    del self._ready[index]
                    self._ready.append(pulled)  # newest of its key: last in line
                    return waiting
        return pulled

    def _reorder(self, delivery: Delivery) -> Delivery:
        """Hand out a delivery already waiting here before ``delivery``, when one of another key
        (or any, on an unordered subscription) is there; otherwise keep the order."""
        for index, other in enumerate(self._ready):
            if not self.spec.ordered or other.key != delivery.key or delivery.key is None:
                if self.spec.ordered and any(
                    earlier.key == other.key for earlier in list(self._ready)[:index]
                ):
                    continue  # would overtake an earlier one of its own key
                del self._ready[index]
                self._ready.appendleft(delivery)
                return other
        return delivery

    async def _pull_another(self) -> None:
        """Take the next delivery too, if the broker has one within a few turns."""
        pulling = asyncio.ensure_future(self.inner.receive())
        for _ in range(1 + self.faults.turns(3)):
            if pulling.done():
                break
            await asyncio.sleep(0)
        await _cancel_keeping(pulling, self._ready)
        self._sync_buffer()

    async def _pull(self) -> Delivery | None:
        """The inner ``receive()``, cut short (and cancelled) when something is given back or
        the subscription stops; ``None`` then, to look again."""
        loop = asyncio.get_running_loop()
        pulling = asyncio.ensure_future(self.inner.receive())
        waker: asyncio.Future[None] = loop.create_future()
        self._wakers.add(waker)
        racing: list[asyncio.Future[Any]] = [pulling, waker]
        try:
            await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await _cancel_keeping(pulling, self._ready)
            self._sync_buffer()
            raise
        finally:
            self._wakers.discard(waker)
        if pulling.done():
            result = pulling.result()
            if result is None:
                self._stopped = True
            return result
        await _cancel_keeping(pulling, self._ready)
        self._sync_buffer()
        return None

    async def stop(self) -> None:
        self._stopped = True
        self._wake()
        await self.inner.stop()

    async def close(self) -> None:
        self._stopped = True
        self._wake()
        self._ready.clear()  # the inner close gives every unacked delivery back to the broker
        await self.inner.close()


async def _cancel_keeping(pulling: asyncio.Future[Delivery | None], ready: deque[Delivery]) -> None:
    """Cancel an inner ``receive()``; a delivery it took meanwhile is kept, last in line (it is
    newer than anything already waiting here)."""
    pulling.cancel()
    try:
        result = await pulling
    except asyncio.CancelledError:
        return
    except Exception:
        return  # an injected or real receive failure of a call nobody waits for any more
    if result is not None:
        ready.append(result)


class FaultyTransport:
    """The wrapper; use :func:`wrap`, which adds the optional SPI the inner transport has."""

    def __init__(self, inner: Transport, faults: Faults, observer: Observer | None = None) -> None:
        self.inner = inner
        self.faults = faults
        self.observer: Observer = observer or _NoObserver()
        self.capabilities = inner.capabilities

    async def connect(self) -> None:
        await self.inner.connect()

    async def close(self) -> None:
        await self.inner.close()

    async def publish(self, message: OutgoingMessage) -> None:
        faults = self.faults
        await faults.stall()
        if faults.publish_refused():
            raise PublishError(f"injected fault: publish to {message.topic!r} refused")
        await self.inner.publish(message)
        self.observer.published(message)
        await faults.stall()
        if faults.chance("publish_after"):
            raise PublishError(f"injected fault: confirm for {message.topic!r} lost (was sent)")

    async def subscribe(self, spec: SubscriptionSpec) -> FaultySubscription:
        inner = await self.inner.subscribe(spec)
        return FaultySubscription(inner, spec, self.faults, self.observer)


class _WaitIdle:
    inner: Any

    async def wait_idle(self) -> None:
        await self.inner.wait_idle()


class _DeclareTopic:
    inner: Any

    async def declare_topic(self, topic: str) -> None:
        await self.inner.declare_topic(topic)


class _Lag:
    inner: Any

    async def lag(self, topic: str, group: str) -> int | None:
        result: int | None = await self.inner.lag(topic, group)
        return result


class _DeadLetters:
    inner: Any

    async def open_dead_letters(self, topic: str) -> Any:
        return await self.inner.open_dead_letters(topic)


_OPTIONAL = (
    (SupportsWaitIdle, _WaitIdle),
    (SupportsDeclareTopic, _DeclareTopic),
    (SupportsLag, _Lag),
    (SupportsDeadLetters, _DeadLetters),
)
_classes: dict[tuple[type, ...], type] = {}


def wrap(transport: Transport, faults: Faults, observer: Observer | None = None) -> Transport:
    """``transport`` behind the fault injector, offering the same optional SPI it does."""
    mixins = tuple(mixin for protocol, mixin in _OPTIONAL if isinstance(transport, protocol))
    cls = _classes.get(mixins)
    if cls is None:
        cls = _classes[mixins] = type("FaultyTransport", (*mixins, FaultyTransport), {})
    wrapped: Transport = cls(transport, faults, observer)
    return wrapped


def inject(broker: Broker, faults: Faults, observer: Observer | None = None) -> Transport:
    """Put the fault injector under ``broker`` (before ``start()``); returns the wrapper."""
    if broker.connected:
        raise RuntimeError("inject faults before the broker connects")
    wrapped = wrap(broker.transport, faults, observer)
    broker.transport = wrapped
    broker.publisher.transport = wrapped
    return wrapped
