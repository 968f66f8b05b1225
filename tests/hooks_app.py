"""A service module for the lifecycle hook test: ``unimq run tests.hooks_app:broker``."""

from __future__ import annotations

from unimq import Broker

broker = Broker("memory://hooks-app", graceful_timeout=5)


@broker.on_startup
async def hello() -> None:
    print("startup hook", flush=True)


@broker.on_shutdown
async def goodbye() -> None:
    print("shutdown hook", flush=True)
