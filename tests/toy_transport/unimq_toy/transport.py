"""A minimal transport: one asyncio.Queue per (topic, group), native delays, no ordering.

It declares ``ordering=False``, so unimq must refuse ``ordered=True`` on it: the feature-flag
path of the conformance suite.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from typing import Any

from unimq.transport import Capabilities, OutgoingMessage, SubscriptionSpec, TransportContext
from unimq.url import BrokerURL

_brokers: dict[str, _ToyBroker] = {}
_ids = itertools.count(1)


class _Record:
    def __init__(self, message: OutgoingMessage) -> None:
        self.topic = message.topic
        self.key = message.key
        self.headers = dict(message.headers)
        self.body = message.body
        self.native_id = f"toy-{next(_ids)}"


class _ToyBroker:
    def __init__(self) -> None:
        self.bindings: dict[str, dict[str, asyncio.Queue[_Record]]] = {}
        self.parked: dict[str, list[_Record]] = {}

    def queue(self, topic: str, group: str) -> asyncio.Queue[_Record]:
        groups = self.bindings.setdefault(topic, {})
        if group not in groups:
            groups[group] = asyncio.Queue()
            for record in self.parked.pop(topic, []):
                groups[group].put_nowait(record)
        return groups[group]

    def route(self, record: _Record) -> None:
        groups = self.bindings.get(record.topic)
        if not groups:
            self.parked.setdefault(record.topic, []).append(record)
            return
        for queue in groups.values():
            queue.put_nowait(record)


class ToyDelivery:
    def __init__(self, record: _Record, subscription: ToySubscription) -> None:
        self.topic = record.topic
        self.key = record.key
        self.headers: Mapping[str, str] = record.headers
        self.body = record.body
        self.native_id = record.native_id
        self.record = record
        self._subscription = subscription

    async def ack(self) -> None:
        self._subscription.unacked.pop(id(self), None)


class ToySubscription:
    def __init__(self, queue: asyncio.Queue[_Record], on_close: Any) -> None:
        self.queue = queue
        self.unacked: dict[int, ToyDelivery] = {}
        self._stopped = asyncio.Event()
        self._on_close = on_close

    async def receive(self) -> ToyDelivery | None:
        if self._stopped.is_set():
            return None
        getter = asyncio.ensure_future(self.queue.get())
        stopper = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # The core cancels receivers (shutdown, racing waits): a record already taken off
            # the queue goes back, or it would be lost (the SPI case receive_cancelled).
            if getter.done() and not getter.cancelled():
                self.queue.put_nowait(getter.result())
            getter.cancel()
            raise
        finally:
            stopper.cancel()
        if not getter.done():
            getter.cancel()
            return None
        delivery = ToyDelivery(getter.result(), self)
        self.unacked[id(delivery)] = delivery
        return delivery

    async def stop(self) -> None:
        self._stopped.set()

    async def close(self) -> None:
        self._stopped.set()
        for delivery in self.unacked.values():
            self.queue.put_nowait(delivery.record)  # back to the broker for redelivery
        self.unacked.clear()
        self._on_close()


class ToyTransport:
    capabilities = Capabilities(max_delay=None, ordering=False, broadcast=True, durable=False)

    def __init__(
        self, url: BrokerURL, options: Mapping[str, Any], context: TransportContext
    ) -> None:
        self._broker = _brokers.setdefault(url.host or "default", _ToyBroker())
        self._clock = context.clock

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(self, message: OutgoingMessage) -> None:
        record = _Record(message)
        delay = (message.deliver_at or 0) - self._clock.now()
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._broker.route, record)
        else:
            self._broker.route(record)

    async def subscribe(self, spec: SubscriptionSpec) -> ToySubscription:
        queue = self._broker.queue(spec.topic, spec.group)

        def on_close() -> None:
            if spec.broadcast:
                self._broker.bindings.get(spec.topic, {}).pop(spec.group, None)

        return ToySubscription(queue, on_close)
