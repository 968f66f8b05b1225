"""The SPI layer (Watermill-style): cases that drive a bare transport, no Broker in between.

The semantic suite (:class:`~unimq.testing.conformance.ConformanceSuite`) checks what a user
sees; when it fails on a new adapter, the cause may be anywhere between the pipeline and the
wire. These cases check one SPI promise each, as listed in ``docs/writing-an-adapter.md``
("What the core expects"), so a broken adapter fails a named SPI method: every case is called
``test_spi_<method>_<promise>``. Subclass :class:`TransportSuite` with the same ``backend``
fixture as the semantic suite::

    class TestMyBrokerSPI(TransportSuite):
        @pytest.fixture
        def backend(self) -> Backend:
            return Backend(url="mybroker://127.0.0.1:1234")
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from ... import headers as h
from ...broker import Broker
from ...errors import PublishError
from ...pipeline import HOLD_IN_PLACE
from ...transport import (
    Delivery,
    OutgoingMessage,
    Subscription,
    SubscriptionSpec,
    SupportsDeadLetters,
    SupportsDeclareTopic,
    SupportsReceiveMany,
    Transport,
)
from .features import missing, requires
from .support import Backend, Names, mark_known_defect

#: How long a case waits for something that should arrive (times ``Backend.time_scale``);
#: generous, since a real broker's consumer may first have to join its group.
ARRIVAL = 30.0
#: How long a case watches for something that must not arrive (times ``time_scale``).
QUIET = 1.0


class Transports:
    """Bare transports for one case, built exactly as a Broker builds its own, all closed at
    the end (subscriptions first)."""

    def __init__(self, backend: Backend, url: str) -> None:
        self.backend = backend
        self.url = url
        self.opened: list[Transport] = []
        self.subscriptions: list[Subscription] = []

    async def open(self) -> Transport:
        transport = Broker(self.url, **self.backend.options).transport  # never started
        await asyncio.wait_for(transport.connect(), ARRIVAL * self.backend.time_scale)
        self.opened.append(transport)
        return transport

    async def subscribe(self, transport: Transport, spec: SubscriptionSpec) -> Subscription:
        subscription = await asyncio.wait_for(
            transport.subscribe(spec), ARRIVAL * self.backend.time_scale
        )
        self.subscriptions.append(subscription)
        return subscription

    async def close_all(self) -> None:
        for subscription in reversed(self.subscriptions):
            try:
                await asyncio.wait_for(subscription.close(), 10)
            except Exception:
                pass
        for transport in reversed(self.opened):
            try:
                await asyncio.wait_for(transport.close(), 10)
            except Exception:
                pass


def outgoing(
    topic: str,
    body: bytes = b"x",
    *,
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> OutgoingMessage:
    """A message as the core would hand it to ``publish``: bookkeeping headers included."""
    message_id = uuid.uuid4().hex
    wire = {h.ID: message_id, h.ATTEMPT: "1", **(headers or {})}
    return OutgoingMessage(topic=topic, body=body, headers=wire, key=key, message_id=message_id)


def spec(topic: str, group: str, **options: Any) -> SubscriptionSpec:
    return SubscriptionSpec(
        topic=topic, group=group, prefetch=options.pop("prefetch", 8), **options
    )


@pytest.mark.asyncio
class TransportSuite:
    """Subclass and provide a ``backend`` fixture returning a :class:`Backend`."""

    @pytest.fixture
    def backend(self) -> Backend:
        raise NotImplementedError("override the 'backend' fixture to return a Backend")

    @pytest.fixture
    def names(self) -> Names:
        return Names()

    @pytest.fixture(autouse=True)
    def requirements(self, request: pytest.FixtureRequest, backend: Backend, names: Names) -> None:
        mark_known_defect(request, backend)
        probe = Broker(backend.url_for(names.id), **backend.options)  # never connected
        reason = missing(
            request.node, probe.transport, restart=backend.restart, scheme=probe.url.scheme
        )
        if reason is not None:
            pytest.skip(reason)

    @pytest_asyncio.fixture
    async def transports(self, backend: Backend, names: Names) -> AsyncIterator[Transports]:
        factory = Transports(backend, backend.url_for(names.id))
        yield factory
        await factory.close_all()

    @pytest.fixture
    def scale(self, backend: Backend) -> float:
        return backend.time_scale

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    async def receive(subscription: Subscription, scale: float, what: str) -> Delivery:
        """``receive()`` within :data:`ARRIVAL`; a ``None`` or a timeout fails ``what``."""
        try:
            delivery = await asyncio.wait_for(subscription.receive(), ARRIVAL * scale)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"{what}: receive() returned nothing in {ARRIVAL * scale:.0f}s"
            ) from None
        assert delivery is not None, f"{what}: receive() returned None on a running subscription"
        return delivery

    @staticmethod
    async def nothing_more(subscription: Subscription, scale: float, what: str) -> None:
        """Fail ``what`` if ``receive()`` hands out anything within :data:`QUIET`."""
        try:
            delivery = await asyncio.wait_for(subscription.receive(), QUIET * scale)
        except asyncio.TimeoutError:
            return
        if delivery is not None:
            raise AssertionError(f"{what}: got {delivery.body[:40]!r} ({delivery.native_id})")

    # -- publish / receive: round-trip fidelity -----------------------------------------------

    async def test_spi_publish_round_trips_body_key_and_headers(
        self, transports: Transports, names: Names, scale: float
    ) -> None:
        transport = await transports.open()
        subscription = await transports.subscribe(transport, spec(names.topic(), names.group()))
        limit = transport.capabilities.max_message_size
        large = b"\x00\xff" * (512 * 1024)  # 1 MiB, not valid UTF-8
        bodies = [b"", b"plain", bytes(range(256)), large]
        if limit is not None:
            bodies = [body for body in bodies if len(body) <= limit]
        user_headers = {
            "tenant": "acme",
            "unicode": "žluťoučký kůň 🐍 日本",
            "empty": "",
            "spaces and: punctuation; here": "a=b, c",
        }
        sent: list[tuple[bytes, str | None, dict[str, str]]] = []
        for n, body in enumerate(bodies):
            message = outgoing(
                names.topic(),
                body,
                key=None if n == 1 else f"key-{n}-ключ",
                headers={**user_headers, "n": str(n)},
            )
            sent.append((message.body, message.key, dict(message.headers)))  # before publish:
            await transport.publish(message)  # an adapter must not change them
        got: dict[str, Delivery] = {}
        for _ in sent:
            delivery = await self.receive(subscription, scale, "Subscription.receive")
            got[delivery.headers["n"]] = delivery
            await delivery.ack()
        for n, (body, key, headers) in enumerate(sent):
            delivery = got[str(n)]
            assert delivery.topic == names.topic(), "Delivery.topic is the topic published to"
            assert delivery.body == body, f"Delivery.body of body #{n} changed"
            assert isinstance(delivery.body, bytes)
            assert delivery.key == key, "Delivery.key must give back the published key"
            for name, value in headers.items():
                # The one header an adapter may leave off the wire: attempt 1, the value the
                # core reads when unimq-attempt is absent.
                default = "1" if name == h.ATTEMPT else None
                assert delivery.headers.get(name, default) == value, f"Delivery.headers[{name!r}]"

    @requires("keeps_unread")
    async def test_spi_publish_to_a_topic_no_one_reads_yet_keeps_the_message(
        self, transports: Transports, names: Names, scale: float
    ) -> None:
        producer = await transports.open()
        message = outgoing(names.topic(), b"early")
        await producer.publish(message)
        consumer = await transports.open()
        subscription = await transports.subscribe(consumer, spec(names.topic(), names.group()))
        delivery = await self.receive(
            subscription, scale, "Transport.publish to an unread topic (message dropped?)"
        )
        assert delivery.body == b"early"
        await delivery.ack()

    async def test_spi_publish_to_a_topic_no_one_reads_is_kept_or_refused_never_dropped(
        self, transports: Transports, names: Names, scale: float
    ) -> None:
        """``keeps_unread=False`` (RabbitMQ) promises a :class:`PublishError`, not silence."""
        producer = await transports.open()
        topic = names.topic()
        if producer.capabilities.keeps_unread:
            await producer.publish(outgoing(topic, b"early"))
            return  # kept: the case above proves the first group gets it
        with pytest.raises(PublishError):
            await producer.publish(outgoing(topic, b"early"))

    async def test_spi_publish_to_a_dotted_retry_topic(
        self, transports: Transports, names: Names, scale: float
    ) -> None:
        """The core's own topics: ``<topic>.<group>.retry`` (role "retry"), dots included."""
        transport = await transports.open()
        topic = f"{names.topic()}.{names.group()}.retry"
        subscription = await transports.subscribe(
            transport, spec(topic, names.group(), role="retry")
        )
        await transport.publish(outgoing(topic, b"retry copy", headers={h.ATTEMPT: "2"}))
        delivery = await self.receive(subscription, scale, "Transport.subscribe(role='retry')")
        assert (delivery.body, delivery.headers[h.ATTEMPT]) == (b"retry copy", "2")
        await delivery.ack()

    # -- receive ------------------------------------------------------------------------------

    async def test_spi_receive_from_concurrent_receivers_hands_each_message_out_once(
        self, transports: Transports, names: Names, scale: float
    ) -> None:
        transport = await transports.open()
        subscription = await transports.subscribe(
            transport, spec(names.topic(), names.group(), prefetch=8)
        )
        got: list[bytes] = []
        total = 40
        complete = asyncio.Event()

        async def receiver() -> None:
            while len(got) < total:
                delivery = await subscription.receive()
                if delivery is None:
                    return
                got.append(delivery.body)
                await delivery.ack()
            complete.set()

        workers = [asyncio.ensure_future(receiver()) for _ in range(8)]
        try:
            for n in range(total):
                await transport.publish(outgoing(names.topic(), str(n).encode()))
            try:
                await asyncio.wait_for(complete.wait(), ARRIVAL * scale)
            except asyncio.TimeoutError:
                pass  # the assertion below reports what arrived
        finally:
            await subscription.stop()
            await asyncio.wait(workers, timeout=10)
        assert sorted(got, key=int) == [str(n).encode() for n in range(total)], (
            "Subscription.receive from 8 concurrent receivers: each message exactly once"
        )

    async def test_spi_receive_cancelled_loses_nothing(
        self, transports: Transports, names: Names, scale: float
    ) -> None:
        """The core cancels receivers (shutdown past ``graceful_timeout``, racing waits): a
        cancelled ``receive()`` must not swallow a message."""
        transport = await transports.open()
        subscription = await transports.subscribe(transport, spec(names.topic(), names.group()))
        for _ in range(3):
            waiting = asyncio.ensure_future(subscription.receive())
            await asyncio.sleep(0.05)
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
        await transport.publish(outgoing(names.topic(), b"after cancel"))
        delivery = await self.receive(subscription, scale, "Subscription.receive after cancel")
        assert delivery.body == b"after cancel"
        await delivery.ack()

    # -- stop ---------------------------------------------------------------------------------

    async def test_spi_stop_wakes_waiting_receivers_with_none(
        self, transports: Transports, names: Names
    ) -> None:
        transport = await transports.open()
        subscription = await transports.subscribe(transport, spec(names.topic(), names.group()))
        waiting = [asyncio.ensure_future(subscription.receive()) for _ in range(4)]
        await asyncio.sleep(0.1)
        await subscription.stop()
        done, pending = await asyncio.wait(waiting, timeout=5)
        for task in pending:
            task.cancel()
        assert not pending, f"Subscription.stop: {len(pending)} of 4 receivers still waiting"
        assert [task.result() for task in done] == [None] * 4
        assert await asyncio.wait_for(subscription.receive(), 5) is None, (
            "Subscription.receive after stop() must return None"
        )

    async def test_spi_stop_keeps_handed_out_deliveries_ackable(
        self, transports: Transports, names: Names, scale: float
    ) -> None:
        transport = await transports.open()
        subscription = await transports.subscribe(transport, spec(names.topic(), names.group()))
        await transport.publish(outgoing(names.topic(), b"in flight"))
        delivery = await self.receive(subscription, scale, "Subscription.receive")
        await subscription.stop()
        await delivery.ack()  # must settle it: the handler finished during shutdown
        await subscription.close()
        again = await transports.subscribe(
            await transports.open(), spec(names.topic(), names.group())
        )
        await self.nothing_more(again, scale, "Delivery.ack between stop() and close() was lost")

    async def test_spi_receive_many_hands_out_each_message_once_and_none_after_stop(
        self, transports: Transports, names: Names, scale: float
    ) -> None:
        """``SupportsReceiveMany`` (optional): up to ``max_n`` per call, each message once,
        acked ones not redelivered, ``[]`` once stopped."""
        transport = await transports.open()
        subscription = await transports.subscribe(
            transport, spec(names.topic(), names.group(), prefetch=16)
        )
        if not isinstance(subscription, SupportsReceiveMany):
            pytest.skip("the subscription has no receive_many (optional: receive is used)")
        bodies = {f"m{n}".encode() for n in range(10)}
        for body in sorted(bodies):
            await transport.publish(outgoing(names.topic(), body))
        got: list[Delivery] = []
        deadline = time.monotonic() + ARRIVAL * scale
        while len(got) < 10 and time.monotonic() < deadline:
            try:
                batch = await asyncio.wait_for(
                    subscription.receive_many(4), deadline - time.monotonic()
                )
            except asyncio.TimeoutError:
                break
            assert 1 <= len(batch) <= 4, f"receive_many(4) returned {len(batch)} deliveries"
            got.extend(batch)
        assert sorted(d.body for d in got) == sorted(bodies), "receive_many lost or repeated some"
        for delivery in got:
            await delivery.ack()
        await subscription.stop()
        assert await asyncio.wait_for(subscription.receive_many(4), 5) == [], (
            "receive_many after stop() must return []"
        )
        await subscription.close()
        again = await transports.subscribe(
            await transports.open(), spec(names.topic(), names.group())
        )
        await self.nothing_more(again, scale, "a delivery acked from receive_many came back")

    # -- close --------------------------------------------------------------------------------

    async def test_spi_close_gives_unacked_deliveries_back(
        self, transports: Transports, names: Names, scale: float
    ) -> None:
        transport = await transports.open()
        subscription = await transports.subscribe(transport, spec(names.topic(), names.group()))
        await transport.publish(outgoing(names.topic(), b"acked"))
        await transport.publish(outgoing(names.topic(), b"unacked"))
        first = await self.receive(subscription, scale, "Subscription.receive")
        second = await self.receive(subscription, scale, "Subscription.receive")
        by_body = {first.body: first, second.body: second}
        await by_body[b"acked"].ack()
        await subscription.stop()
        await subscription.close()
        successor = await transports.subscribe(
            await transports.open(), spec(names.topic(), names.group())
        )
        redelivered = await self.receive(
            successor, scale, "Subscription.close must give unacked deliveries back"
        )
        assert redelivered.body == b"unacked"
        await redelivered.ack()
        await self.nothing_more(successor, scale, "an acked delivery came back after close()")

    async def test_spi_transport_close_is_idempotent(self, transports: Transports) -> None:
        transport = await transports.open()
        await transport.close()
        await transport.close()

    # -- ack ----------------------------------------------------------------------------------

    async def test_spi_ack_is_idempotent(
        self, transports: Transports, names: Names, scale: float
    ) -> None:
        transport = await transports.open()
        subscription = await transports.subscribe(transport, spec(names.topic(), names.group()))
        await transport.publish(outgoing(names.topic(), b"once"))
        delivery = await self.receive(subscription, scale, "Subscription.receive")
        await delivery.ack()
        await delivery.ack()  # must neither raise nor settle anything else
        await self.nothing_more(subscription, scale, "Delivery.ack twice")
        await subscription.stop()
        await subscription.close()
        successor = await transports.subscribe(
            await transports.open(), spec(names.topic(), names.group())
        )
        await self.nothing_more(successor, scale, "an acked delivery came back after close()")

    # -- native_id ----------------------------------------------------------------------------

    async def test_spi_native_id_identifies_each_message(
        self, transports: Transports, names: Names, scale: float
    ) -> None:
        transport = await transports.open()
        subscription = await transports.subscribe(transport, spec(names.topic(), names.group()))
        for n in range(3):
            await transport.publish(outgoing(names.topic(), str(n).encode()))
        ids = []
        for _ in range(3):
            delivery = await self.receive(subscription, scale, "Subscription.receive")
            assert isinstance(delivery.native_id, str) and delivery.native_id, (
                "Delivery.native_id must be a non-empty string"
            )
            ids.append(delivery.native_id)
            await delivery.ack()
        assert len(set(ids)) == 3, f"Delivery.native_id must differ per message: {ids}"

    # -- subscribe: groups, ordering, broadcast -----------------------------------------------

    async def test_spi_subscribe_each_group_gets_every_message(
        self, transports: Transports, names: Names, scale: float
    ) -> None:
        transport = await transports.open()
        groups = [
            await transports.subscribe(transport, spec(names.topic(), names.group(g)))
            for g in ("one", "two")
        ]
        for n in range(3):
            await transport.publish(outgoing(names.topic(), str(n).encode()))
        for subscription in groups:
            bodies = []
            for _ in range(3):
                delivery = await self.receive(subscription, scale, "Transport.subscribe (group)")
                bodies.append(delivery.body)
                await delivery.ack()
            assert sorted(bodies) == [b"0", b"1", b"2"], "every group gets every message"

    @requires("ordering")
    async def test_spi_subscribe_ordered_keeps_one_keys_publish_order(
        self, transports: Transports, names: Names, scale: float
    ) -> None:
        transport = await transports.open()
        subscription = await transports.subscribe(
            transport, spec(names.topic(), names.group(), ordered=True, prefetch=8)
        )
        for n in range(20):
            await transport.publish(outgoing(names.topic(), str(n).encode(), key="one-key"))
        got = []
        for _ in range(20):
            delivery = await self.receive(subscription, scale, "Subscription.receive (ordered)")
            got.append(int(delivery.body))
            await delivery.ack()
        assert got == list(range(20)), f"ordered=True: one key out of publish order: {got}"

    @requires("broadcast")
    async def test_spi_subscribe_broadcast_reaches_every_instance(
        self, transports: Transports, names: Names, scale: float
    ) -> None:
        instances = []
        for n in range(2):
            transport = await transports.open()
            group = f"{names.group()}.instance{n}"
            instances.append(
                await transports.subscribe(transport, spec(names.topic(), group, broadcast=True))
            )
        await asyncio.sleep(0.5 * scale)  # a broadcast subscription may take a moment to bind
        await transports.opened[0].publish(outgoing(names.topic(), b"to all"))
        for subscription in instances:
            delivery = await self.receive(subscription, scale, "Transport.subscribe(broadcast)")
            assert delivery.body == b"to all"
            await delivery.ack()

    # -- delays -------------------------------------------------------------------------------

    @requires("native_delay")
    async def test_spi_publish_deliver_at_holds_the_message(
        self, transports: Transports, names: Names, scale: float
    ) -> None:
        """The core holds a delivery that comes up to ``HOLD_IN_PLACE`` seconds early, so the
        broker may be that early, but no earlier."""
        transport = await transports.open()
        subscription = await transports.subscribe(transport, spec(names.topic(), names.group()))
        due = time.time() + 4.0
        message = outgoing(names.topic(), b"later", headers={h.DELIVER_AT: str(int(due * 1000))})
        message.deliver_at = due
        await transport.publish(message)
        delivery = await self.receive(subscription, scale, "Transport.publish(deliver_at)")
        early = due - time.time()
        assert early <= HOLD_IN_PLACE + 0.1, f"deliver_at: arrived {early:.2f}s early"
        await delivery.ack()

    # -- optional SPI -------------------------------------------------------------------------

    @requires(SupportsDeclareTopic)
    async def test_spi_declare_topic_keeps_messages_no_group_reads(
        self, transports: Transports, names: Names
    ) -> None:
        """A declared (dead-letter) topic accepts messages before anyone reads it, and, with
        ``SupportsDeadLetters``, a dead-letter session finds them."""
        transport = await transports.open()
        assert isinstance(transport, SupportsDeclareTopic)
        topic = names.topic("dlq")
        await transport.declare_topic(topic)
        await transport.declare_topic(topic)  # idempotent
        await transport.publish(outgoing(topic, b"dead letter"))  # must not be unroutable
        if not isinstance(transport, SupportsDeadLetters):
            return
        session = await transport.open_dead_letters(topic)
        try:
            assert await session.count() == 1, "SupportsDeadLetters: declared topic count"
            letter = await session.next()
            assert letter is not None and letter.body == b"dead letter", (
                "SupportsDeclareTopic.declare_topic: the message was not kept"
            )
        finally:
            await session.close()
