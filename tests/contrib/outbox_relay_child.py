"""A standalone outbox relay process for the crash tests: ``python outbox_relay_child.py
DB_URL TABLE BROKER_URL``. Prints ``ready`` once relaying; runs until killed.

``bridge://127.0.0.1:PORT`` is a tiny transport that hands each message to the test process
over TCP and returns once the test process's memory broker holds it: the memory broker then
outlives the relay process, as a real broker outlives a SIGKILLed relay.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import Mapping
from typing import Any

from unimq_sql import SQLOutbox

from unimq import Broker
from unimq.errors import PublishError
from unimq.plugins import transport_registry
from unimq.transport import Capabilities, OutgoingMessage, SubscriptionSpec, TransportContext
from unimq.url import BrokerURL


class BridgeTransport:
    capabilities = Capabilities(durable=True)

    def __init__(
        self, url: BrokerURL, options: Mapping[str, Any], context: TransportContext
    ) -> None:
        self.host = url.host or "127.0.0.1"
        self.port = int(url.port or 0)
        self._lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    async def publish(self, message: OutgoingMessage) -> None:
        frame = {
            "topic": message.topic,
            "body": base64.b64encode(message.body).decode(),
            "headers": message.headers,
            "key": message.key,
            "message_id": message.message_id,
            "content_type": message.content_type,
            "deliver_at": message.deliver_at,
        }
        assert self._reader is not None and self._writer is not None
        async with self._lock:
            self._writer.write(json.dumps(frame).encode() + b"\n")
            await self._writer.drain()
            answer = await self._reader.readline()
        if answer != b"ok\n":
            raise PublishError(f"bridge refused: {answer!r}")

    async def subscribe(self, spec: SubscriptionSpec) -> Any:
        raise NotImplementedError


async def main(db_url: str, table: str, broker_url: str) -> None:
    transport_registry().add("bridge", BridgeTransport, "test bridge")
    outbox = SQLOutbox(db_url, table=table, batch_size=50, poll_interval=0.05)
    broker = Broker(broker_url, outbox=outbox)
    await broker.connect()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
