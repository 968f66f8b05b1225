"""A worker process for the fault tests: handles TOPIC in GROUP, appending each id to OUTFILE.

Usage: python fault_worker.py URL TOPIC GROUP OUTFILE [--ordered]
Prints "ready" once its subscriber runs, so the test knows when to start killing.
"""

from __future__ import annotations

import asyncio
import sys

from unimq import Broker, Message


async def main(url: str, topic: str, group: str, path: str, ordered: bool) -> None:
    broker = Broker(url)
    out = open(path, "a", buffering=1)  # noqa: SIM115 - line-buffered for the whole run

    @broker.subscriber(topic, group=group, concurrency=8, ordered=ordered)
    async def handle(message: Message) -> None:
        await asyncio.sleep(0.002)
        out.write(f"{message.id} {message.key or ''}\n")

    async with broker:
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5], ordered="--ordered" in sys.argv))
