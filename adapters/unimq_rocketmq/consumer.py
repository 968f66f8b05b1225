"""Pull-based consumption on a SimpleConsumer, without blocking the event loop.

The core runs ``prefetch`` workers per subscription, each calling :meth:`receive`. One fetch
task per master broker of the topic (:mod:`.brokers`: an empty broker's long poll must not
hold up another broker's backlog) long-polls the proxy (``receive_async``, a
``concurrent.futures`` future the client resolves on its own threads, awaited through
``asyncio.wrap_future``) for at most as many messages as there is room for, and puts them on
an in-process queue: at most ``prefetch`` deliveries are ever held (receives in flight
included), so no received message waits long enough to reach its invisible duration
unnoticed. Messages of one receive call come in queue order and are queued in that
order, so FIFO message groups reach the core's per-key lanes in order.

A received message stays invisible to the group's other consumers for ``invisible_duration``
only. A handler, or an ordered message retried in place, may take longer, so a renewal task
extends the invisibility of every delivery this subscription holds unsettled (queued or
handed out) once half of it has passed, until it is acked, released or the subscription
closes. A delivery whose renewal fails, or whose invisibility lapsed before it could be
renewed (the broker may already have handed it to another consumer), turns ``revoked``
(:class:`~unimq.transport.SupportsRevocation`): the core drops it instead of running its
handler again, and it no longer counts against ``prefetch``.

Acks and invisibility changes are built here from the client's public protobuf types and sent
through its RPC client asynchronously: its own ``ack_async``/``change_invisible_duration_async``
return nothing or an ``asyncio.Future`` made outside any loop (client 5.1.2), and the blocking
variants would cost a thread per call.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from unimq.transport import SubscriptionSpec

from . import brokers, codec, names

logger = logging.getLogger("unimq.rocketmq")

# Failures that are part of normal operation right after startup or while idle.
#: Receiving that fails for this long (seconds) restarts the client's consumer.
_RECREATE_AFTER = 8.0
_TRANSIENT = ("settings", "timeout", "deadline", "40401", "message_not_found", "no new message")


class RocketMQDelivery(codec.Received):
    __slots__ = ("_renewing", "_revoked", "_settled", "_subscription", "invisible_until")

    def __init__(
        self, message: Any, subscription: RocketMQSubscription, invisible_until: float
    ) -> None:
        super().__init__(message)
        self._subscription = subscription
        self._settled = False
        self._revoked = False
        #: Loop time at which the broker makes the message visible again, unless renewed.
        self.invisible_until = invisible_until
        self._renewing: asyncio.Task[None] | None = None

    @property
    def topic(self) -> str:
        return self._subscription.topic

    @property
    def revoked(self) -> bool:
        """True once the broker may have handed this message to another consumer (its
        invisibility lapsed or could not be renewed)."""
        return self._revoked

    async def _after_renewal(self) -> None:
        """Settling uses the receipt handle a renewal in flight is about to replace: wait."""
        renewing = self._renewing
        if renewing is not None and not renewing.done():
            await asyncio.gather(asyncio.shield(renewing), return_exceptions=True)

    async def ack(self) -> None:
        if self._settled:
            return
        self._settled = True
        await self._after_renewal()
        try:
            await self._subscription.ack(self._message)
        except Exception as exc:
            # Not settled on the broker: it redelivers after the invisible duration
            # (at-least-once; an idempotent subscriber acks the copy without running it).
            logger.warning("ack of %s on %r failed: %s", self.native_id, self.topic, exc)
        finally:
            self._subscription.settled(self)

    @classmethod
    async def ack_many(cls, deliveries: Sequence[RocketMQDelivery]) -> None:
        """``ack`` of each, concurrently (:class:`unimq.transport.SupportsAckMany`). An ack is
        a round trip to the broker; without this the core acked a batch subscriber's batch one
        awaited ack after the other (a Settlement each), so a batch of 256 waited for 256 round
        trips in a row. Each ack still logs its own failure and never raises."""
        await asyncio.gather(*[delivery.ack() for delivery in deliveries])

    async def release(self, delay: int) -> None:
        """Give the message back to the broker (visible again after ``delay`` seconds)."""
        if self._settled:
            return
        self._settled = True
        await self._after_renewal()
        try:
            await self._subscription.change_invisible(self._message, delay)
        except Exception as exc:  # it reappears after its invisible duration anyway
            logger.debug("could not release %s: %s", self.native_id, exc)
        finally:
            self._subscription.settled(self)


class RocketMQSubscription:
    def __init__(
        self,
        consumer: Any,
        factory: Callable[[], Any],
        spec: SubscriptionSpec,
        *,
        invisible_duration: int,
        batch_size: int,
        release_delay: int,
        await_duration: int = 5,
    ) -> None:
        self.consumer = consumer
        self._factory = factory
        self.topic = spec.topic
        self.physical_topic = names.encode(spec.topic)
        self.prefetch = max(1, spec.prefetch)
        self.invisible_duration = invisible_duration
        self.batch_size = batch_size
        self.release_delay = release_delay
        self.await_duration = await_duration
        self._ready: deque[RocketMQDelivery] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._unsettled: set[RocketMQDelivery] = set()
        self._room = asyncio.Event()
        self._room.set()
        self._stopped = False
        self._closed = False
        #: One fetch task per master broker of the route (:mod:`.brokers`); slot 0 also
        #: starts the others as brokers appear.
        self._fetchers: list[asyncio.Task[None]] = []
        #: Messages asked for by receives in flight (they count against ``prefetch``).
        self._asking = 0
        self._renewer: asyncio.Task[None] | None = None
        #: When the route was last queried because a broker was missing from it (loop time).
        self._route_asked = float("-inf")

    def start(self) -> None:
        self._add_fetcher()
        self._renewer = asyncio.create_task(
            self._renew(), name=f"unimq-rocketmq-renew:{self.topic}"
        )

    async def receive(self) -> RocketMQDelivery | None:
        while not self._stopped:
            if self._ready:
                return self._ready.popleft()
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        return None

    async def receive_many(self, max_n: int) -> list[RocketMQDelivery]:
        """Batch subscribers' ``receive`` (``SupportsReceiveMany``): wait for one delivery,
        then take up to ``max_n`` of those fetched already, without waiting; ``[]`` once
        stopped. One await per batch instead of one per message."""
        first = await self.receive()
        if first is None:
            return []
        deliveries = [first]
        ready = self._ready
        while ready and len(deliveries) < max_n:
            deliveries.append(ready.popleft())
        return deliveries

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _add_fetcher(self) -> None:
        slot = len(self._fetchers)
        self._fetchers.append(
            asyncio.create_task(self._fetch(slot), name=f"unimq-rocketmq:{self.topic}:{slot}")
        )

    async def _fetch(self, slot: int) -> None:
        """Fetch loop number ``slot``: receives from the slot-th master broker of the route
        (by name), so an empty broker's long poll never holds up another broker's backlog
        (:mod:`.brokers`); slot 0 falls back to the client's round-robin receive when the
        route is unknown."""
        loop_errors = 0
        failing_since: float | None = None
        loop = asyncio.get_running_loop()
        while not self._stopped:
            targets = brokers.broker_queues(self.consumer, self.physical_topic)
            if slot == 0:
                while len(self._fetchers) < len(targets):
                    self._add_fetcher()
            elif slot >= len(targets):  # that broker left the route: wait for it to return
                await self._refresh_route(loop)
                await asyncio.sleep(1.0)
                continue
            room = self.prefetch - len(self._unsettled) - self._asking
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            consumer = self.consumer
            # a fair share of prefetch per broker: a slot long-polling an empty broker must not
            # hold all the room while another broker has a backlog
            share = max(1, self.prefetch // max(1, len(targets)))
            ask = min(room, self.batch_size, share)
            self._asking += ask
            try:
                # Invisibility starts when the broker hands the messages out, after this.
                asked = loop.time()
                if targets:
                    future = brokers.receive_from(
                        consumer,
                        self.physical_topic,
                        targets[slot],
                        ask,
                        self.invisible_duration,
                        self.await_duration,
                    )
                else:
                    future = consumer.receive_async(ask, self.invisible_duration)
                messages = await asyncio.wrap_future(future)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._stopped:
                    return
                now = loop.time()
                if failing_since is None:
                    failing_since = now
                elif now - failing_since > _RECREATE_AFTER:
                    # A restarted proxy forgets the client's settings ("cannot find client
                    # settings", 40015) and client 5.1.2 never sends them again: start afresh.
                    failing_since = None
                    if consumer is self.consumer:  # not restarted by another slot already
                        await self._recreate(exc)
                    continue
                if is_transient(exc):
                    await asyncio.sleep(0.2)
                    continue
                loop_errors += 1
                log = logger.warning if loop_errors <= 3 else logger.debug
                log("receiving from %r failed (retrying): %s", self.topic, exc)
                await asyncio.sleep(min(0.5 * loop_errors, 2.0))
                continue
            finally:
                self._asking -= ask
                self._room.set()  # room this receive did not fill is free again
            loop_errors = 0
            failing_since = None
            for message in messages or ():
                delivery = RocketMQDelivery(message, self, asked + self.invisible_duration)
                self._unsettled.add(delivery)
                if self._stopped:
                    await delivery.release(self.release_delay)
                    continue
                self._ready.append(delivery)
                self._wake_one()

    async def _refresh_route(self, loop: asyncio.AbstractEventLoop) -> None:
        """Query the route now if nobody did for :data:`brokers.ROUTE_REFRESH_WHILE_MISSING`
        seconds, so a restarted broker is read again within seconds of its return instead of
        at the client's next 30 s refresh (its delayed messages fall due behind it)."""
        now = loop.time()
        if now - self._route_asked < brokers.ROUTE_REFRESH_WHILE_MISSING:
            return
        self._route_asked = now
        await asyncio.to_thread(brokers.refresh_route, self.consumer, self.physical_topic)

    async def _recreate(self, error: BaseException) -> None:
        logger.warning(
            "receiving from %r keeps failing (%s); restarting its RocketMQ consumer",
            self.topic,
            error,
        )
        try:
            fresh = await asyncio.to_thread(self._factory)
        except Exception as exc:
            logger.warning("restarting the consumer of %r failed: %s", self.topic, exc)
            await asyncio.sleep(1.0)
            return
        old, self.consumer = self.consumer, fresh
        asyncio.get_running_loop().run_in_executor(None, _shutdown_quietly, old)

    async def _renew(self) -> None:
        """Keep every unsettled delivery invisible to the group's other consumers.

        Each is renewed for another ``invisible_duration`` once half of its current one has
        passed, which leaves the other half for the request (``request_timeout``) and for a
        busy loop. The requests go through the client's own threads (an RPC future), never
        blocking the loop; one at a time per delivery, and settling waits for it (see
        :meth:`RocketMQDelivery._after_renewal`).
        """
        loop = asyncio.get_running_loop()
        duration = self.invisible_duration
        tick = min(1.0, duration / 10)
        while not self._closed:
            await asyncio.sleep(tick)
            now = loop.time()
            for delivery in list(self._unsettled):
                if delivery._settled or delivery._revoked:
                    continue
                renewing = delivery._renewing
                if renewing is not None and not renewing.done():
                    continue
                if now >= delivery.invisible_until:
                    self._revoke(delivery, "its invisible duration lapsed before renewal")
                elif delivery.invisible_until - now <= duration / 2:
                    delivery._renewing = asyncio.create_task(self._renew_one(delivery))

    async def _renew_one(self, delivery: RocketMQDelivery) -> None:
        loop = asyncio.get_running_loop()
        asked = loop.time()
        try:
            await change_invisible(self.consumer, delivery._message, self.invisible_duration)
        except Exception as exc:
            if not delivery._settled:
                self._revoke(delivery, f"renewing its invisibility failed: {exc}")
            return
        delivery.invisible_until = asked + self.invisible_duration

    def _revoke(self, delivery: RocketMQDelivery, why: str) -> None:
        """The broker may hand ``delivery`` to another consumer: stop holding it."""
        delivery._revoked = True
        logger.warning(
            "message %s on %r may be redelivered to another consumer (%s); it will not be "
            "handled here again",
            delivery.native_id,
            self.topic,
            why,
        )
        try:
            self._ready.remove(delivery)  # not handed out yet: nobody will settle it
        except ValueError:
            pass
        self.settled(delivery)

    def settled(self, delivery: RocketMQDelivery) -> None:
        self._unsettled.discard(delivery)
        self._room.set()

    async def ack(self, message: Any) -> None:
        await ack_message(self.consumer, message)

    async def change_invisible(self, message: Any, seconds: int) -> None:
        await change_invisible(self.consumer, message, seconds)

    async def stop(self) -> None:
        self._stopped = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        self._room.set()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.stop()
        renewer = self._renewer
        if renewer is not None:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)
        # Handed out (or queued) but not acked: visible again now, not after the invisible
        # duration, so a successor takes over at once.
        pending = list(self._unsettled)
        self._ready.clear()
        await asyncio.gather(
            self._finish_fetching(),
            *(delivery.release(self.release_delay) for delivery in pending),
        )
        try:
            await asyncio.to_thread(self.consumer.shutdown)
        except Exception as exc:
            logger.debug("consumer shutdown for %r: %s", self.topic, exc)

    async def _finish_fetching(self) -> None:
        """Let a receive that is still long-polling end, then stop the fetch task.

        Cancelling it would not stop the broker: its long poll stays registered and takes the
        next message that arrives for a consumer that is gone (the group's offset moves past
        it and it stays invisible for ``invisible_duration``; the proxy does not give it back
        when the call was cancelled, measured with 5.3.3). Waited for, the fetch loop gives
        such messages back at once, as it does for anything received after ``stop``. Bounded
        by the long-polling time (a receive that hangs longer is cancelled as before).
        """
        await asyncio.gather(*(self._finish_fetcher(fetcher) for fetcher in self._fetchers))

    async def _finish_fetcher(self, fetcher: asyncio.Task[None]) -> None:
        if fetcher.done():
            return
        limit = float(self.await_duration) + 1.0
        try:
            await asyncio.wait_for(asyncio.shield(fetcher), limit)
        except asyncio.TimeoutError:
            fetcher.cancel()
        except Exception as exc:  # the fetch loop logs its own failures
            logger.debug("fetching from %r ended with %s", self.topic, exc)
        await asyncio.gather(fetcher, return_exceptions=True)


def start_consumer(config: Any, group: str, topic: str, *, await_duration: int, tls: bool) -> Any:
    """A started ``SimpleConsumer`` of ``group`` on physical ``topic`` (blocking: run it in a
    worker thread)."""
    import rocketmq

    consumer = rocketmq.SimpleConsumer(
        config,
        group,
        {topic: rocketmq.FilterExpression()},
        await_duration=await_duration,
        tls_enable=tls,
    )
    consumer.startup()
    return consumer


async def ack_message(consumer: Any, message: Any) -> None:
    """Ack ``message`` (received by ``consumer``) without blocking the loop."""
    from rocketmq.grpc_protocol import AckMessageEntry, AckMessageRequest

    namespace = consumer.client_configuration.namespace
    request = AckMessageRequest()
    request.group.name = consumer.consumer_group
    request.group.resource_namespace = namespace
    request.topic.name = message.topic
    request.topic.resource_namespace = namespace
    entry = AckMessageEntry()
    entry.message_id = message.message_id
    entry.receipt_handle = message.receipt_handle
    request.entries.append(entry)
    await _rpc(consumer, consumer.rpc_client.ack_message_async, message, request)


async def change_invisible(consumer: Any, message: Any, seconds: int) -> None:
    """Make ``message`` visible again after ``seconds`` (0: at once, as far as the broker's
    revive service goes); its receipt handle is replaced by the new one."""
    from rocketmq.grpc_protocol import ChangeInvisibleDurationRequest

    namespace = consumer.client_configuration.namespace
    request = ChangeInvisibleDurationRequest()
    request.topic.name = message.topic
    request.topic.resource_namespace = namespace
    request.group.name = consumer.consumer_group
    request.group.resource_namespace = namespace
    request.receipt_handle = message.receipt_handle
    request.invisible_duration.seconds = seconds
    request.message_id = message.message_id
    rpc = consumer.rpc_client.change_invisible_duration_async
    response = await _rpc(consumer, rpc, message, request)
    message.receipt_handle = response.receipt_handle


async def _rpc(consumer: Any, call: Any, message: Any, request: Any) -> Any:
    """Send a request built here through the client's RPC stub, without blocking the loop."""
    future = call(
        message.endpoints,
        request,
        metadata=consumer.sign(),
        timeout=consumer.client_configuration.request_timeout,
    )
    response = await asyncio.wrap_future(future)
    _check(response.status)
    return response


def is_transient(exc: BaseException) -> bool:
    """A receive failure that is part of normal operation right after startup or while idle."""
    text = f"{type(exc).__name__} {exc}".lower()
    return any(mark in text for mark in _TRANSIENT)


def _shutdown_quietly(consumer: Any) -> None:
    try:
        consumer.shutdown()
    except Exception as exc:
        logger.debug("consumer shutdown: %s", exc)


def _check(status: Any) -> None:
    from rocketmq.v5.util import MessagingResultChecker

    MessagingResultChecker.check(status)
