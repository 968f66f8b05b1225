"""The FastAPI example (examples/fastapi_shop) under Starlette's TestClient on memory://.

TestClient runs the app, and so ``broker.lifespan``, on an event loop in a helper thread;
``client.portal.call`` runs broker coroutines (``drain``, ``VirtualClock.advance``) there.
"""

from __future__ import annotations

import uuid

import pytest

pytest.importorskip("fastapi", reason="the web extra: pip install 'unimq[web]'")

from examples.fastapi_shop.app import STARTED, Shop, create_app
from fastapi import FastAPI
from fastapi.testclient import TestClient

from unimq import Broker
from unimq.testing import VirtualClock


def _app(clock: VirtualClock | None = None) -> tuple[Broker, FastAPI]:
    options = {"clock": clock} if clock is not None else {}
    broker = Broker(f"memory://shop-{uuid.uuid4().hex[:8]}", **options)
    return broker, create_app(broker, Shop())


def test_routes_publish_and_subscribers_run_in_the_same_app() -> None:
    broker, app = _app()
    with TestClient(app) as client:
        assert broker.connected
        response = client.post("/orders", json={"order_id": "o-1", "sku": "a-1", "quantity": 2})
        assert response.status_code == 202
        client.portal.call(broker.drain, 5)  # type: ignore[union-attr]
        assert client.get("/orders/o-1").json() == {"status": "pending"}
    assert not broker.connected  # the lifespan stopped it


def test_a_route_asks_a_subscriber_with_request_reply() -> None:
    _, app = _app()
    with TestClient(app) as client:
        response = client.get("/quotes/a-1", params={"quantity": 3})
        assert response.status_code == 200
        assert response.json() == {"sku": "a-1", "cents": 597}


def test_an_unpaid_order_is_closed_after_the_payment_timeout_on_virtual_time() -> None:
    clock = VirtualClock()
    broker, app = _app(clock)
    with TestClient(app) as client:
        client.post("/orders", json={"order_id": "o-1", "sku": "a", "quantity": 1})
        client.post("/orders", json={"order_id": "o-2", "sku": "b", "quantity": 1})
        client.portal.call(broker.drain, 5)  # type: ignore[union-attr]
        client.post("/orders/o-2/paid")
        client.portal.call(clock.advance, 29 * 60)  # type: ignore[union-attr]
        assert client.get("/orders/o-1").json() == {"status": "pending"}
        client.portal.call(clock.advance, 60)  # type: ignore[union-attr]
        assert client.get("/orders/o-1").json() == {"status": "closed: unpaid"}
        assert client.get("/orders/o-2").json() == {"status": "paid"}


async def test_the_startup_hook_publishes_once_connected() -> None:
    broker, app = _app()
    audit = Broker(broker.url.raw)  # another service on the same memory:// hub, already running
    seen: list[dict[str, str]] = []

    @audit.subscriber(STARTED, group="audit")
    async def record(event: dict[str, str]) -> None:
        seen.append(event)

    async with audit, broker.lifespan(app) as state:
        assert state == {"broker": broker}
        await audit.drain(5)
    assert seen == [{"service": "shop"}]
