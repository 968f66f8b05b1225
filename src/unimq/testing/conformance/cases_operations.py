"""Operations: dead-letter list / show / replay / purge, and consumer lag.

Both rest on optional SPI extensions (``SupportsDeadLetters``, ``SupportsLag``); a backend
without them has these cases skipped, with the reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ... import Broker, Message, Reject, RetryPolicy, fixed
from ... import headers as h
from ...dlq import REPLAYED_AT, DeadLetterQueue, Selection
from ...transport import SupportsDeadLetters, SupportsLag
from .features import requires
from .support import Backend, BrokerFactory, Collector, Names


async def eventually(
    probe: Callable[[], Awaitable[Any]], expected: Any, timeout: float, what: str
) -> None:
    """Poll ``probe`` until it returns ``expected``; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    seen: Any = None
    while time.monotonic() < deadline:
        seen = await probe()
        if seen == expected:
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"{what}: expected {expected!r} within {timeout:.0f}s, last saw {seen!r}")


class OperationsCases:
    @requires(SupportsDeadLetters)
    async def test_dead_letters_list_replay_round_trip(
        self, brokers: BrokerFactory, names: Names, collector: Any, backend: Backend
    ) -> None:
        """A message fails into the DLQ, is listed, replayed by id, and then succeeds."""
        handled: Collector = collector()
        healthy = {"value": False}
        broker = brokers()

        @broker.subscriber(names.topic(), group=names.group())
        async def fragile(message: Message) -> None:
            if not healthy["value"]:
                raise Reject("downstream refused it")
            handled.add((message.id, message.attempt, dict(message.headers)))

        await broker.start()
        dlq = DeadLetterQueue(broker, f"{names.topic()}.{names.group()}.dlq")
        first = await broker.publish(names.topic(), b"one", key="k1", headers={"tenant": "acme"})
        second = await broker.publish(names.topic(), b"two", key="k2")
        await eventually(dlq.count, 2, 20 * backend.time_scale, "dead letters")

        page = await dlq.list(limit=10)
        assert page.total == 2
        assert {letter.id for letter in page.letters} == {first.message_id, second.message_id}
        letter = next(x for x in page.letters if x.id == first.message_id)
        assert (letter.reason, letter.key, letter.attempts) == ("rejected", "k1", 1)
        assert letter.error_message == "downstream refused it"
        assert letter.original_topic == names.topic()
        assert letter.original_group == names.group()
        assert letter.headers["tenant"] == "acme"
        shown = await dlq.show(second.message_id)
        assert shown is not None and shown.body == b"two"
        assert await dlq.count() == 2, "list and show must not remove anything"

        healthy["value"] = True
        outcome = await dlq.replay(Selection(ids={first.message_id}))
        assert (outcome.done, outcome.ids) == (1, [first.message_id])
        [(replayed_id, attempt, replayed_headers)] = await handled.wait_for(1, timeout=20)
        assert (replayed_id, attempt) == (first.message_id, 1)
        assert replayed_headers["tenant"] == "acme"
        assert REPLAYED_AT in replayed_headers
        assert h.DLQ_REASON not in replayed_headers
        await eventually(dlq.count, 1, 20 * backend.time_scale, "dead letters after replay")
        assert [x.id for x in (await dlq.list()).letters] == [second.message_id]

        outcome = await dlq.replay()
        assert outcome.done == 1
        await handled.wait_for(2, timeout=20)
        await eventually(dlq.count, 0, 20 * backend.time_scale, "dead letters after replay")
        await handled.settle(1.0)
        assert sorted(item[0] for item in handled.items) == sorted(
            [first.message_id, second.message_id]
        )

    @requires(SupportsDeadLetters)
    async def test_dead_letters_purge_by_selection(
        self, brokers: BrokerFactory, names: Names, backend: Backend
    ) -> None:
        broker = brokers()

        @broker.subscriber(
            names.topic(), group=names.group(), retry=RetryPolicy(2, backoff=fixed(0.2))
        )
        async def refuse(message: Message) -> None:
            if message.body == b"bad":
                raise Reject("bad body")
            raise ValueError("not today")

        await broker.start()
        dlq = DeadLetterQueue(broker, f"{names.topic()}.{names.group()}.dlq")
        for body in (b"bad", b"bad", b"worse"):
            await broker.publish(names.topic(), body)
        await eventually(dlq.count, 3, 60 * backend.time_scale, "dead letters")
        outcome = await dlq.purge(Selection(reasons={"rejected"}))
        assert outcome.done == 2
        await eventually(dlq.count, 1, 20 * backend.time_scale, "dead letters after purge")
        [left] = (await dlq.list()).letters
        assert left.reason == "max-attempts" and left.error_type.endswith("ValueError")
        assert (await dlq.purge()).done == 1
        await eventually(dlq.count, 0, 20 * backend.time_scale, "dead letters after purge")

    @requires(SupportsLag)
    async def test_lag_counts_unconsumed_messages(
        self, brokers: BrokerFactory, names: Names, collector: Any, backend: Backend
    ) -> None:
        seen: Collector = collector()

        def consumer() -> Broker:
            broker = brokers()

            @broker.subscriber(names.topic(), group=names.group())
            async def count(message: Message) -> None:
                seen.add(message.id)

            return broker

        first = consumer()
        await first.start()  # the group exists from here on
        await first.stop()
        producer = brokers()
        await producer.connect()
        transport = producer.transport
        assert isinstance(transport, SupportsLag)
        ids = {(await producer.publish(names.topic(), b"x")).message_id for _ in range(7)}

        async def lag() -> int | None:
            return await transport.lag(names.topic(), names.group())

        await eventually(lag, 7, 30 * backend.time_scale, "lag with no consumer running")
        await consumer().start()
        await seen.wait_for_all(ids, timeout=30)
        await eventually(lag, 0, 30 * backend.time_scale, "lag after consuming everything")
