"""What the stages and the settle step need from the runtime of their subscriber.

A protocol, so that the stages and the settlement depend on this small surface and the runtime
depends on them, never the other way round (no import cycle, not even for type checking).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, Protocol, TypeVar

from ..idempotency import IdempotencyStore
from ..instrumentation import Listeners
from ..message import Message
from ..publishing import Publisher
from ..router import Subscriber
from ..transport import Delivery, Transport, TransportTransaction

T = TypeVar("T")
Next = Callable[[], Awaitable[Any]]
#: Handler middleware: ``async def mw(message, call_next)``, outermost first.
Middleware = Callable[[Message, Next], Awaitable[Any]]


class Host(Protocol):
    """What a settlement needs from the subscriber runtime that owns it."""

    subscriber: Subscriber
    group: str
    retry_topic: str
    publisher: Publisher
    store: IdempotencyStore
    listeners: Listeners
    retry_in_place: bool
    #: An ack is only an ack (not idempotent: no mark to write first).
    plain_ack: bool
    revocable: bool
    executor: Executor | None
    middlewares: list[Middleware]
    idempotency_lease: float
    transport: Transport
    #: transactional=True: begins a transaction that also consumes the delivery; else None.
    consume_transaction: Callable[[Delivery], Awaitable[TransportTransaction]] | None
    max_transaction_messages: int | None

    @property
    def stopping(self) -> bool: ...

    def now(self) -> float: ...

    #: idempotent=True: how many deliveries of each message id are running in this subscriber.
    running_ids: dict[str, int]

    async def parked(self, awaitable: Awaitable[T], delivery: Delivery) -> T:
        """Await ``awaitable`` with the delivery parked."""

    async def pause(self, seconds: float, delivery: Delivery, *others: Delivery) -> bool:
        """Wait on the clock, the delivery parked; ``False`` if stopping cut it short."""
