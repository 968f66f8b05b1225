"""A worker process for the shared rate-limit test: handles TOPIC in GROUP under a rate limit
shared through Redis, appending the wall-clock time of each handler start to OUTFILE.

Usage: python rate_worker.py BROKER_URL TOPIC GROUP REDIS_URL RATE OUTFILE
Prints "ready" once its subscriber runs; runs until killed. OUTFILE.waits gets one line per
admission, "<time> <seconds waited for tokens>", so a failing run can tell a busy machine
(the workers could not keep up: nobody waited) from a budget that was not enforced, and
OUTFILE.lag one line per 0.1 s, "<time> <seconds the event loop woke up late> <CPU seconds
used so far>": a loop that is late by much is a machine too busy to run 100 handlers a second
in this process.

Concurrency 128: a rate limit is a cap, reached only when enough workers ask for tokens. Each
worker's cycle (receive, token, wait, handler, ack) must take less than concurrency / rate
seconds (here 640 ms); on a machine shared by many jobs, 16 and even 64 workers did not
always keep up.
"""

from __future__ import annotations

import asyncio
import sys
import time

import unimq
from unimq import Broker
from unimq.instrumentation import Listener


class Waits(Listener):
    def __init__(self, path: str) -> None:
        self.out = open(path, "a", buffering=1)  # noqa: SIM115 - line-buffered for the run

    def rate_limited(self, topic: str, group: str, tokens: int, wait: float, held: float) -> None:
        self.out.write(f"{time.time():.6f} {wait:.6f}\n")


async def main(url: str, topic: str, group: str, redis_url: str, rate: str, path: str) -> None:
    broker = Broker(url)
    broker.add_listener(Waits(path + ".waits"))
    out = open(path, "a", buffering=1)  # noqa: SIM115 - line-buffered for the whole run
    # A small burst: tokens that pile up while the test is still publishing the backlog would
    # otherwise let up to one second's worth through at once, inside the measured window.
    limit = unimq.RateLimit(float(rate), per=1.0, burst=20, shared=redis_url)

    @broker.subscriber(topic, group=group, concurrency=128, rate_limit=limit)
    async def handle(body: bytes) -> None:
        out.write(f"{time.time():.6f}\n")

    async with broker:
        print("ready", flush=True)
        lag = open(path + ".lag", "a", buffering=1)  # noqa: SIM115 - for the whole run
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.1)
            late = time.monotonic() - before - 0.1
            lag.write(f"{time.time():.6f} {late:.6f} {time.process_time():.6f}\n")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
