"""The blocking facade: publishing from ordinary threads with no event loop of their own."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from unimq import Message, NotConnectedError, PublishError, UnimqError
from unimq.blocking import BlockingBroker
from unimq.instrumentation import Publish, PublishNext
from unimq.memory.hub import forget


def test_many_threads_publish_and_subscribers_run_on_the_facade_loop() -> None:
    forget("blocking")
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()
    broker = BlockingBroker("memory://blocking")

    @broker.subscriber("orders", group="audit")
    def audit(body: str, message: Message) -> None:  # a plain function: runs in a thread
        with lock:
            seen.append((message.id, body))

    with broker:
        assert threading.current_thread() is threading.main_thread()

        def send(n: int) -> str:
            return broker.publish("orders", f"order-{n}", key=f"c-{n % 7}").message_id

        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(send, range(400)))
        broker.drain(timeout=10)
    assert len(set(ids)) == 400
    assert sorted(i for i, _ in seen) == sorted(ids)
    assert repr(broker) == "BlockingBroker('memory://blocking', stopped)"


def test_publish_before_start_is_a_clear_error() -> None:
    broker = BlockingBroker("memory://")
    with pytest.raises(NotConnectedError, match="start"):
        broker.publish("t", b"x")


def test_close_is_idempotent_and_stops_the_loop_thread() -> None:
    broker = BlockingBroker("memory://").start()
    broker.publish("t", b"x")
    broker.close()
    broker.close()
    assert not any(t.name == "unimq-blocking-loop" and t.is_alive() for t in threading.enumerate())
    with pytest.raises(NotConnectedError):
        broker.publish("t", b"x")


def test_a_publish_that_takes_too_long_raises_publish_error() -> None:
    broker = BlockingBroker("memory://", timeout=0.2)

    async def stuck(publish: Publish, call_next: PublishNext) -> None:
        await asyncio.sleep(5)

    broker.broker.add_publish_middleware(stuck)
    with broker, pytest.raises(PublishError, match=r"within 0\.2s"):
        broker.publish("t", b"x")


def test_calling_it_from_its_own_loop_is_refused() -> None:
    broker = BlockingBroker("memory://").start()
    try:

        async def inside() -> None:
            broker.publish("t", b"x")

        with pytest.raises(UnimqError, match="own event loop"):
            broker.run(inside())
    finally:
        broker.close()
