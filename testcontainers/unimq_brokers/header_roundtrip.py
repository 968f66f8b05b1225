"""The header round trip shared by the Kafka and RocketMQ header tests: a subscriber that
fails each message once (a retry copy), then rejects it (a dead-letter copy), and a reader of
the dead-letter topic, so each test checks that every copy carries exactly the user's headers.

The hypothesis strategies stay within what ``Broker.publish`` accepts (names of 1..128 UTF-8
bytes outside the ``unimq-`` namespace, text values, at most 32 KiB in all).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

from hypothesis import strategies as st

from unimq import Broker, Message, Reject, RetryPolicy
from unimq import headers as h
from unimq.naming import dead_letter_topic

T = TypeVar("T")
MAX_NAME_BYTES = 128
MAX_TOTAL_BYTES = 32 * 1024


def _valid_name(name: str) -> bool:
    return 0 < len(name.encode()) <= MAX_NAME_BYTES and name[:6].lower() != h.PREFIX


NAMES = st.text(min_size=1, max_size=40).filter(_valid_name)
VALUES = st.text(max_size=120)
HEADERS = st.dictionaries(NAMES, VALUES, max_size=8)


class Roundtrip:
    """A subscriber that fails each message once, then rejects it, and a reader of its
    dead-letter topic, running on a loop thread of their own so that a synchronous
    hypothesis test can drive them."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        tag = uuid.uuid4().hex[:8]
        self.topic, self.group = f"headers.{tag}.events", f"headers-{tag}"
        self.received: dict[str, list[dict[str, str]]] = {}
        self.dead: dict[str, dict[str, str]] = {}
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.broker = Broker(url, **options)
        retry = RetryPolicy(max_attempts=3, backoff=lambda attempt: 0.0)

        @self.broker.subscriber(self.topic, group=self.group, retry=retry, dead_letter=True)
        async def handle(message: Message) -> None:
            self.received.setdefault(message.id, []).append(dict(message.headers))
            if message.attempt == 1:
                raise RuntimeError("fail once: a retry copy")
            raise Reject("then dead-letter it")

        dlq = dead_letter_topic(self.topic, self.group)

        @self.broker.subscriber(dlq, group=f"{self.group}-inspect")
        async def inspect(message: Message) -> None:
            self.dead[message.id] = dict(message.headers)

        self.run(self.broker.start())

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _send(self, headers: dict[str, str]) -> str:
        receipt = await self.broker.publish(self.topic, b"body", headers=headers)
        deadline = time.monotonic() + 60
        while receipt.message_id not in self.dead:
            if time.monotonic() > deadline:
                raise AssertionError(f"no dead-letter copy of {headers!r} within 60 s")
            await asyncio.sleep(0.05)
        return receipt.message_id

    def check(self, headers: dict[str, str]) -> None:
        message_id = self.run(self._send(headers))
        copies = self.received[message_id]
        assert copies == [headers, headers], f"consumed / retry copy: {copies!r}"
        dead = {k: v for k, v in self.dead[message_id].items() if k not in h.DLQ_DIAGNOSTICS}
        assert dead == headers, f"dead-letter copy: {dead!r}"

    def close(self) -> None:
        try:
            self.run(self.broker.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()
