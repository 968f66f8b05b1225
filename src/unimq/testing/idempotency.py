"""``IdempotencyStoreCases``: the conformance cases every idempotency store must pass.

Mix it into a test class and provide a ``store`` fixture (async fixtures work)::

    from unimq.testing.idempotency import IdempotencyStoreCases

    class TestMyStore(IdempotencyStoreCases):
        @pytest_asyncio.fixture
        async def store(self):
            store = MyStore(...)
            yield store
            await store.close()

        # Durable stores: a second instance on the same server (another process, in real
        # life). The cases that need it are skipped while this returns None.
        @pytest_asyncio.fixture
        async def second_store(self):
            ...

The cases use fresh group and message ids in every test, so a durable store may keep one
server (and its data) for a whole session. ``time_scale`` multiplies every wait deadline.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from ..broker import Broker
from ..idempotency import IdempotencyStore
from ..message import Message
from ..retry import RetryPolicy, fixed

LONG = 30.0  # a lease that does not expire during a test


class _Ids:
    def __init__(self) -> None:
        run = uuid.uuid4().hex[:10]
        self.group = f"idem-{run}"
        self.other_group = f"idem-{run}-other"
        self.id = f"msg-{run}"


@pytest.mark.asyncio
class IdempotencyStoreCases:
    """Cases for :class:`~unimq.idempotency.IdempotencyStore` implementations."""

    #: Multiplies every deadline (slow CI machines, remote servers).
    time_scale: float = 1.0

    @pytest.fixture
    def store(self) -> IdempotencyStore:
        raise NotImplementedError("override the 'store' fixture to return the store under test")

    @pytest.fixture
    def second_store(self) -> IdempotencyStore | None:
        """Another instance on the same server; None for a store that is not shared."""
        return None

    @pytest.fixture
    def ids(self) -> _Ids:
        return _Ids()

    async def _within(self, awaitable: Any, seconds: float = 10.0) -> Any:
        return await asyncio.wait_for(awaitable, seconds * self.time_scale)

    async def _still_waiting(self, task: asyncio.Task[bool], seconds: float = 0.3) -> None:
        await asyncio.sleep(seconds)
        assert not task.done(), "a duplicate did not wait for the live lease of the first copy"

    # -- one holder -----------------------------------------------------------------------

    async def test_first_begin_claims(self, store: IdempotencyStore, ids: _Ids) -> None:
        assert await self._within(store.begin(ids.group, ids.id, LONG)) is True
        await store.release(ids.group, ids.id)

    async def test_complete_makes_later_begins_return_false(
        self, store: IdempotencyStore, ids: _Ids
    ) -> None:
        assert await self._within(store.begin(ids.group, ids.id, LONG)) is True
        await store.complete(ids.group, ids.id)
        for _ in range(2):
            assert await self._within(store.begin(ids.group, ids.id, LONG)) is False

    async def test_complete_is_seen_by_a_second_store_instance(
        self, store: IdempotencyStore, second_store: IdempotencyStore | None, ids: _Ids
    ) -> None:
        if second_store is None:
            pytest.skip("the store is not shared between instances")
        assert await self._within(store.begin(ids.group, ids.id, LONG)) is True
        await store.complete(ids.group, ids.id)
        assert await self._within(second_store.begin(ids.group, ids.id, LONG)) is False

    async def test_release_lets_the_next_begin_claim(
        self, store: IdempotencyStore, ids: _Ids
    ) -> None:
        assert await self._within(store.begin(ids.group, ids.id, LONG)) is True
        await store.release(ids.group, ids.id)
        assert await self._within(store.begin(ids.group, ids.id, LONG)) is True
        await store.complete(ids.group, ids.id)
        assert await self._within(store.begin(ids.group, ids.id, LONG)) is False

    async def test_complete_after_losing_the_lease_still_records(
        self, store: IdempotencyStore, ids: _Ids
    ) -> None:
        """A holder whose lease expired (and was taken over, then given up) still records its
        success: the handler did run."""
        assert await self._within(store.begin(ids.group, ids.id, 0.2)) is True
        await asyncio.sleep(0.4)
        assert await self._within(store.begin(ids.group, ids.id, LONG)) is True  # took over
        await store.release(ids.group, ids.id)  # the second run failed
        await store.complete(ids.group, ids.id)  # the first run succeeded after all
        assert await self._within(store.begin(ids.group, ids.id, LONG)) is False

    async def test_groups_and_ids_are_independent(self, store: IdempotencyStore, ids: _Ids) -> None:
        assert await self._within(store.begin(ids.group, ids.id, LONG)) is True
        await store.complete(ids.group, ids.id)
        assert await self._within(store.begin(ids.other_group, ids.id, LONG)) is True
        assert await self._within(store.begin(ids.group, ids.id + "-2", LONG)) is True
        assert await self._within(store.begin(ids.group, ids.id, LONG)) is False
        await store.release(ids.other_group, ids.id)
        await store.release(ids.group, ids.id + "-2")

    async def test_a_group_with_separators_does_not_collide(
        self, store: IdempotencyStore, ids: _Ids
    ) -> None:
        """("a:b", "c") and ("a", "b:c") are different marks whatever the store's key format."""
        assert await self._within(store.begin(f"{ids.group}:x", "y", LONG)) is True
        await store.complete(f"{ids.group}:x", "y")
        assert await self._within(store.begin(ids.group, "x:y", LONG)) is True
        await store.release(ids.group, "x:y")

    # -- concurrent duplicates ------------------------------------------------------------

    async def test_duplicate_waits_for_the_holder_then_false_after_complete(
        self, store: IdempotencyStore, ids: _Ids
    ) -> None:
        assert await self._within(store.begin(ids.group, ids.id, LONG)) is True
        duplicate = asyncio.create_task(store.begin(ids.group, ids.id, LONG))
        try:
            await self._still_waiting(duplicate)
            await store.complete(ids.group, ids.id)
            assert await self._within(duplicate, 5.0) is False
        finally:
            duplicate.cancel()

    async def test_duplicate_waits_for_the_holder_then_true_after_release(
        self, store: IdempotencyStore, ids: _Ids
    ) -> None:
        assert await self._within(store.begin(ids.group, ids.id, LONG)) is True
        duplicate = asyncio.create_task(store.begin(ids.group, ids.id, LONG))
        try:
            await self._still_waiting(duplicate)
            await store.release(ids.group, ids.id)
            assert await self._within(duplicate, 5.0) is True
        finally:
            duplicate.cancel()
        await store.complete(ids.group, ids.id)

    async def test_second_instance_waits_for_the_holder(
        self, store: IdempotencyStore, second_store: IdempotencyStore | None, ids: _Ids
    ) -> None:
        if second_store is None:
            pytest.skip("the store is not shared between instances")
        assert await self._within(store.begin(ids.group, ids.id, LONG)) is True
        duplicate = asyncio.create_task(second_store.begin(ids.group, ids.id, LONG))
        try:
            await self._still_waiting(duplicate)
            await store.complete(ids.group, ids.id)
            assert await self._within(duplicate, 5.0) is False
        finally:
            duplicate.cancel()

    async def test_expired_lease_lets_another_claimer_in(
        self, store: IdempotencyStore, ids: _Ids
    ) -> None:
        lease = 0.5
        started = time.monotonic()
        assert await self._within(store.begin(ids.group, ids.id, lease)) is True
        # The holder never finishes (it crashed); the duplicate waits out its lease.
        assert await self._within(store.begin(ids.group, ids.id, LONG)) is True
        waited = time.monotonic() - started
        assert waited >= lease * 0.8, f"the duplicate got in after {waited:.3f}s, lease {lease}s"
        await store.complete(ids.group, ids.id)
        assert await self._within(store.begin(ids.group, ids.id, LONG)) is False

    async def test_stale_release_keeps_the_new_holders_lease(
        self, store: IdempotencyStore, second_store: IdempotencyStore | None, ids: _Ids
    ) -> None:
        """A holder whose lease expired and was taken over cannot release the new lease."""
        if second_store is None:
            pytest.skip("the store is not shared between instances")
        assert await self._within(store.begin(ids.group, ids.id, 0.2)) is True
        await asyncio.sleep(0.4)
        assert await self._within(second_store.begin(ids.group, ids.id, LONG)) is True
        await store.release(ids.group, ids.id)  # the stale holder gives up late
        third = asyncio.create_task(store.begin(ids.group, ids.id, LONG))
        try:
            await self._still_waiting(third)
            await second_store.complete(ids.group, ids.id)
            assert await self._within(third, 5.0) is False
        finally:
            third.cancel()

    async def test_many_concurrent_begins_claim_once(
        self, store: IdempotencyStore, ids: _Ids
    ) -> None:
        async def consumer() -> bool:
            claimed = await store.begin(ids.group, ids.id, LONG)
            if claimed:
                await asyncio.sleep(0.1)  # "run the handler"
                await store.complete(ids.group, ids.id)
            return claimed

        results = await self._within(asyncio.gather(*(consumer() for _ in range(20))), 20.0)
        assert results.count(True) == 1, results

    async def test_many_concurrent_begins_across_instances_claim_once(
        self, store: IdempotencyStore, second_store: IdempotencyStore | None, ids: _Ids
    ) -> None:
        if second_store is None:
            pytest.skip("the store is not shared between instances")

        async def consumer(instance: IdempotencyStore) -> bool:
            claimed = await instance.begin(ids.group, ids.id, LONG)
            if claimed:
                await asyncio.sleep(0.1)
                await instance.complete(ids.group, ids.id)
            return claimed

        instances = [store, second_store] * 10
        results = await self._within(asyncio.gather(*(consumer(s) for s in instances)), 20.0)
        assert results.count(True) == 1, results

    # -- through a broker -----------------------------------------------------------------

    async def test_broker_runs_a_duplicate_message_once(
        self, store: IdempotencyStore, ids: _Ids
    ) -> None:
        seen: list[str] = []
        broker = Broker(f"memory://idem-{ids.group}", idempotency_store=store)

        @broker.subscriber("orders", group=ids.group, idempotent=True)
        async def handle(message: Message) -> None:
            seen.append(message.id)

        async with broker:
            for _ in range(3):
                await broker.publish("orders", b"x", message_id=ids.id)
            await broker.publish("orders", b"x", message_id=ids.id + "-other")
            await broker.drain(10 * self.time_scale)
            await asyncio.sleep(0.2)
            await broker.drain(10 * self.time_scale)
        assert sorted(seen) == [ids.id, ids.id + "-other"]

    async def test_broker_failed_run_leaves_no_mark(
        self, store: IdempotencyStore, ids: _Ids
    ) -> None:
        attempts: list[int] = []
        retried = asyncio.Event()
        broker = Broker(f"memory://idem-{ids.group}", idempotency_store=store)

        @broker.subscriber(
            "orders",
            group=ids.group,
            idempotent=True,
            retry=RetryPolicy(max_attempts=3, backoff=fixed(0.05)),
        )
        async def handle(message: Message) -> None:
            attempts.append(message.attempt)
            if message.attempt > 1:
                retried.set()
            if message.attempt == 1:
                raise RuntimeError("fails the first time")

        async with broker:
            await broker.publish("orders", b"x", message_id=ids.id)
            await self._within(retried.wait())
            await broker.drain(10 * self.time_scale)
            await broker.publish("orders", b"x", message_id=ids.id)  # now a duplicate
            await broker.drain(10 * self.time_scale)
            await asyncio.sleep(0.2)
        assert attempts == [1, 2]
