"""A FastAPI service with unimq: routes that publish and ask, subscribers in the same app.

- ``POST /orders`` publishes ``OrderCreated`` and schedules a ``PaymentDue`` check in 30 min;
- ``GET /quotes/{sku}`` asks the pricing subscriber with ``broker.request`` (request/reply);
- subscribers: ``fulfilment`` records orders, ``pricing`` answers quotes, ``payments`` closes
  orders that are still unpaid when the check arrives;
- ``@broker.on_startup`` publishes ``service.started`` once connected.

The broker starts and stops with the app (``FastAPI(lifespan=broker.lifespan)``): connect on
startup; on shutdown stop consuming, let in-flight handlers finish, disconnect.

Run::

    uvicorn examples.fastapi_shop.app:app            # memory://shop, or UNIMQ_URL=amqp://...

Tests (``tests/test_web_example.py``) build the same app on a ``memory://`` broker with a
``VirtualClock`` through :func:`create_app`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel

import unimq
from unimq import Broker, Router

ORDERS_CREATED = "shop.orders.created"
PAYMENT_DUE = "shop.orders.payment-due"
QUOTES = "shop.prices.quote"
STARTED = "shop.service.started"
PAYMENT_TIMEOUT = timedelta(minutes=30)


class OrderCreated(BaseModel):
    order_id: str
    sku: str
    quantity: int


class PaymentDue(BaseModel):
    order_id: str


class Quote(BaseModel):
    sku: str
    quantity: int = 1


class Price(BaseModel):
    sku: str
    cents: int


class Shop:
    """The service's state (a database in real life)."""

    def __init__(self) -> None:
        self.orders: dict[str, str] = {}  # order id -> status

    def router(self) -> Router:
        router = Router()

        @router.subscriber(ORDERS_CREATED, group="fulfilment")
        async def fulfil(order: OrderCreated) -> None:
            self.orders.setdefault(order.order_id, "pending")

        @router.subscriber(PAYMENT_DUE, group="payments")
        async def close_if_unpaid(due: PaymentDue) -> None:
            if self.orders.get(due.order_id) == "pending":
                self.orders[due.order_id] = "closed: unpaid"

        @router.subscriber(QUOTES, group="pricing")
        async def quote(q: Quote) -> Price:  # the return value is the reply
            return Price(sku=q.sku, cents=199 * q.quantity)

        return router


def get_broker(request: Request) -> Broker:
    """A route dependency: the broker the lifespan started (``request.state.broker``)."""
    broker: Broker = request.state.broker
    return broker


BrokerDep = Annotated[Broker, Depends(get_broker)]


def create_app(broker: Broker, shop: Shop | None = None) -> FastAPI:
    """The app for ``broker`` (tests pass a ``memory://`` broker with a ``VirtualClock``)."""
    shop = shop or Shop()
    broker.include_router(shop.router())

    @broker.on_startup
    async def announce() -> None:
        await broker.publish(STARTED, {"service": "shop"})

    app = FastAPI(lifespan=broker.lifespan)
    app.state.shop = shop

    @app.post("/orders", status_code=202)
    async def create_order(order: OrderCreated, broker: BrokerDep) -> dict[str, str]:
        receipt = await broker.publish(ORDERS_CREATED, order, key=order.order_id)
        await broker.publish(
            PAYMENT_DUE, PaymentDue(order_id=order.order_id), delay=PAYMENT_TIMEOUT
        )
        return {"message_id": receipt.message_id}

    @app.post("/orders/{order_id}/paid")
    async def pay(order_id: str) -> dict[str, str]:
        shop.orders[order_id] = "paid"
        return {"status": "paid"}

    @app.get("/orders/{order_id}")
    async def status(order_id: str) -> dict[str, str]:
        if order_id not in shop.orders:
            raise HTTPException(404, f"no order {order_id}")
        return {"status": shop.orders[order_id]}

    @app.get("/quotes/{sku}")
    async def get_quote(sku: str, broker: BrokerDep, quantity: int = 1) -> Price:
        try:
            reply = await broker.request(QUOTES, Quote(sku=sku, quantity=quantity), timeout=5)
        except unimq.RequestTimeoutError:
            raise HTTPException(504, "pricing did not answer in time") from None
        return Price.model_validate_json(reply.body)

    return app


broker = Broker.from_env("memory://shop")
app = create_app(broker)
