"""A Starlette app for the ASGI lifespan tests: ``uvicorn tests.asgi_app:app``.

``POST /slow`` publishes a message whose handler takes ``ASGI_SLOW_SECONDS`` (1.5 s); the
handler appends ``started <id>`` and ``finished <id>`` to the file ``ASGI_MARKER`` names, so
a test can send SIGTERM while it runs and check that it finished.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from unimq import Broker, Message

broker = Broker("memory://asgi-app", graceful_timeout=10)
MARKER = Path(os.environ.get("ASGI_MARKER", os.devnull))
SLOW = float(os.environ.get("ASGI_SLOW_SECONDS", "1.5"))


def _note(text: str) -> None:
    with MARKER.open("a") as file:
        file.write(text + "\n")


@broker.subscriber("asgi.slow", group="slow")
async def slow(message: Message) -> None:
    _note(f"started {message.id}")
    await asyncio.sleep(SLOW)
    _note(f"finished {message.id}")


@broker.on_shutdown
async def goodbye() -> None:
    _note("shutdown hook")


async def publish(request: Request) -> JSONResponse:
    receipt = await request.state.broker.publish("asgi.slow", b"work")
    return JSONResponse({"message_id": receipt.message_id})


app = Starlette(routes=[Route("/slow", publish, methods=["POST"])], lifespan=broker.lifespan)
