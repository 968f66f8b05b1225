"""Consumer groups: competing consumers inside a group, fan-out across groups, broadcast."""

from __future__ import annotations

from typing import Any

import pytest

from ... import Message, UnsupportedFeatureError
from .cases_delivery import publish_many
from .support import Backend, BrokerFactory, Collector, Names


class GroupCases:
    async def test_competing_consumers_share_a_group(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        seen: Collector = collector()
        instances = [brokers(), brokers()]
        for index, broker in enumerate(instances):

            def make(index: int) -> Any:
                async def handle(message: Message) -> None:
                    seen.add((message.id, index))

                return handle

            broker.subscriber(names.topic(), group=names.group("workers"), concurrency=2)(
                make(index)
            )
        for broker in instances:
            await broker.start()
        ids = await publish_many(instances[0], names.topic(), [b"x"] * 200)
        await seen.wait_for(200, timeout=30)
        await seen.settle(0.5)
        got = [message_id for message_id, _ in seen.items]
        assert sorted(got) == sorted(ids), "each message exactly once within the group"

    async def test_every_group_gets_every_message(
        self, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        groups = ["inventory", "billing", "email"]
        seen = {group: collector() for group in groups}
        broker = brokers()
        for group in groups:

            def make(group: str) -> Any:
                async def handle(message: Message) -> None:
                    seen[group].add(message.id)

                return handle

            broker.subscriber(names.topic(), group=names.group(group))(make(group))
        await broker.start()
        ids = await publish_many(broker, names.topic(), [b"x"] * 20)
        for group in groups:
            await seen[group].wait_for(20)
            await seen[group].settle(0.3)
            assert sorted(seen[group].items) == sorted(ids), group

    async def test_broadcast_reaches_every_instance(
        self, backend: Backend, brokers: BrokerFactory, names: Names, collector: Any
    ) -> None:
        if not brokers().capabilities.broadcast:  # the refusal is the contract then
            broker = brokers()
            with pytest.raises(UnsupportedFeatureError):

                @broker.subscriber(names.topic(), group=names.group(), broadcast=True)
                async def refused(message: Message) -> None: ...

            return
        seen = [collector(), collector()]
        instances = [brokers(), brokers()]
        for broker, sink in zip(instances, seen, strict=True):

            def make(sink: Collector) -> Any:
                async def invalidate(message: Message) -> None:
                    sink.add(message.id)

                return invalidate

            broker.subscriber(names.topic(), group=names.group("cache"), broadcast=True)(make(sink))
        for broker in instances:
            await broker.start()
        ids = await publish_many(instances[0], names.topic(), [b"x"] * 5)
        for sink in seen:
            await sink.wait_for(5)
            await sink.settle(0.3)
            assert sorted(sink.items) == sorted(ids)
