"""Pull-based consumption on a SimpleConsumer, without blocking the event loop.

The core runs ``prefetch`` workers per subscription, each calling :meth:`receive`. One fetch
task per subscription long-polls the proxy (``receive_async``, a ``concurrent.futures`` future
the client resolves on its own threads, awaited through ``asyncio.wrap_future``) for at most as
many messages as there is room for, and puts them on an in-process queue: at most ``prefetch``
deliveries are ever held, so no received message waits long enough to reach its invisible
duration unnoticed. Messages of one receive call come in queue order and are queued in that
order, so FIFO message groups reach the core's per-key lanes in order.

Acks and invisibility changes are built here from the client's public protobuf types and sent
through its RPC client asynchronously: its own ``ack_async``/``change_invisible_duration_async``
return nothing or an ``asyncio.Future`` made outside any loop (client 5.1.2), and the blocking
variants would cost a thread per call.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from unimq.transport import SubscriptionSpec

from . import codec, names

logger = logging.getLogger("unimq.rocketmq")

# Failures that are part of normal operation right after startup or while idle.
#: Receiving that fails for this long (seconds) restarts the client's consumer.
_RECREATE_AFTER = 8.0
_TRANSIENT = ("settings", "timeout", "deadline", "40401", "message_not_found", "no new message")


class RocketMQDelivery(codec.Received):
    __slots__ = ("_settled", "_subscription")

    def __init__(self, message: Any, subscription: RocketMQSubscription) -> None:
        super().__init__(message)
        self._subscription = subscription
        self._settled = False

    @property
    def topic(self) -> str:
        return self._subscription.topic

    async def ack(self) -> None:
        if self._settled:
            return
        self._settled = True
        try:
            await self._subscription.ack(self._message)
        except Exception as exc:
            # Not settled on the broker: it redelivers after the invisible duration
            # (at-least-once; an idempotent subscriber acks the copy without running it).
            logger.warning("ack of %s on %r failed: %s", self.native_id, self.topic, exc)
        finally:
            self._subscription.settled(self)

    async def release(self, delay: int) -> None:
        """Give the message back to the broker (visible again after ``delay`` seconds)."""
        if self._settled:
            return
        self._settled = True
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
    ) -> None:
        self.consumer = consumer
        self._factory = factory
        self.topic = spec.topic
        self.physical_topic = names.encode(spec.topic)
        self.prefetch = max(1, spec.prefetch)
        self.invisible_duration = invisible_duration
        self.batch_size = batch_size
        self.release_delay = release_delay
        self._ready: deque[RocketMQDelivery] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._unsettled: set[RocketMQDelivery] = set()
        self._room = asyncio.Event()
        self._room.set()
        self._stopped = False
        self._closed = False
        self._fetcher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._fetcher = asyncio.create_task(self._fetch(), name=f"unimq-rocketmq:{self.topic}")

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

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _fetch(self) -> None:
        loop_errors = 0
        failing_since: float | None = None
        loop = asyncio.get_running_loop()
        while not self._stopped:
            room = self.prefetch - len(self._unsettled)
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                future = self.consumer.receive_async(
                    min(room, self.batch_size), self.invisible_duration
                )
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
            loop_errors = 0
            failing_since = None
            for message in messages or ():
                delivery = RocketMQDelivery(message, self)
                self._unsettled.add(delivery)
                if self._stopped:
                    await delivery.release(self.release_delay)
                    continue
                self._ready.append(delivery)
                self._wake_one()

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
        fetcher = self._fetcher
        if fetcher is None or fetcher.done():
            return
        limit = float(getattr(self.consumer, "await_duration", None) or 5) + 1.0
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
