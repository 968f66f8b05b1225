"""A RabbitMQ vhost of a test's own, on a container broker.

Why: unimq declares a shared delay ladder (``unimq.delay.L<k>``) in every vhost it connects to,
of the ``queue_type`` it is set to. A test that needs classic queues must not declare them in
the shared ``/`` vhost, where the other tests already declared the ladder as quorum queues
(RabbitMQ refuses to change a queue's type: ``ConfigurationError``). The vhost is deleted
afterwards, with everything in it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit


@asynccontextmanager
async def own_vhost(broker: Any, prefix: str = "test") -> AsyncIterator[str]:
    """Create a fresh vhost that the broker's ``guest`` user may use fully; yield its URL (the
    broker's URL with the vhost as path, the query kept)."""
    vhost = f"{prefix}-{uuid.uuid4().hex[:8]}"
    await rabbitmqctl(broker, "add_vhost", vhost)
    try:
        await rabbitmqctl(broker, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        parts = urlsplit(broker.url)
        yield urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))
    finally:
        await rabbitmqctl(broker, "delete_vhost", vhost)


async def rabbitmqctl(broker: Any, *args: str) -> None:
    """Run ``rabbitmqctl ARGS`` in the broker's container; fail the test if it fails."""
    code, _, err = await asyncio.to_thread(broker.exec, ["rabbitmqctl", *args])
    assert code == 0, f"rabbitmqctl {' '.join(args)}: {err}"
