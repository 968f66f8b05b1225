"""Order processing with unimq: one event, four services, a retry, a dead letter, a delayed job.

The order service publishes ``OrderCreated``. Four consumer groups each get every order:

- ``inventory`` reserves stock,
- ``billing`` charges the card (bank-transfer orders wait for the money instead),
- ``email`` sends the confirmation (a plain ``def``: unimq runs it in a worker thread),
- ``loyalty`` credits points; its backend is flaky, so it retries with exponential backoff and
  dead-letters what still fails. ``dlq-inspector`` reads that dead-letter topic.

For every order the order service also schedules a delayed ``PaymentDue`` check; ``payments``
closes the order if it is still unpaid when the check arrives.

Run the demo (publishes three orders, waits until everything is handled, exits)::

    python -m examples.orders          # from the repository root; -v shows unimq's own logs
    python examples/orders/app.py

Run only the consumers, as a service, until Ctrl-C / SIGTERM::

    unimq run examples.orders.app:broker

Both run on ``memory://orders`` unless ``UNIMQ_URL`` names a broker, e.g.
``UNIMQ_URL=amqp://guest:guest@127.0.0.1:5672/``. Nothing else changes.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
import time
from datetime import timedelta
from typing import Literal

from pydantic import BaseModel

import unimq
from unimq import Broker, Message, RetryPolicy, Router

# --- messages ------------------------------------------------------------------------------

ORDERS_CREATED = "orders.created"
PAYMENT_DUE = "orders.payment-due"
# A subscriber's dead-letter topic defaults to "<topic>.<group>.dlq".
LOYALTY_DLQ = f"{ORDERS_CREATED}.loyalty.dlq"

# How long an order may stay unpaid. In production this would be 30 minutes
# (timedelta(minutes=30)); the demo uses 2 seconds so you can watch it happen.
PAYMENT_TIMEOUT = timedelta(seconds=float(os.environ.get("ORDERS_PAYMENT_TIMEOUT", "2")))


class OrderCreated(BaseModel):
    order_id: str
    customer: str
    item: str
    quantity: int
    amount_cents: int
    payment: Literal["card", "bank-transfer"] = "card"


class PaymentDue(BaseModel):
    order_id: str


# --- the demo's stand-ins for databases and remote services ----------------------------------
# Plain in-process state keeps the example short. A real service keeps this in its database.

PAID: set[str] = set()
JOURNAL: dict[str, dict[str, str]] = {}  # order id -> {step: outcome}, for the final summary
STEPS = ("inventory", "billing", "email", "loyalty", "payments")
_STARTED = time.monotonic()
_OUTPUT = threading.Lock()


def say(who: str, text: str) -> None:
    """Print one line of the narrative (from the event loop or a worker thread)."""
    with _OUTPUT:
        sys.stdout.write(f"{time.monotonic() - _STARTED:6.2f}s  [{who}] {text}\n")
        sys.stdout.flush()


def record(order_id: str, step: str, outcome: str) -> None:
    with _OUTPUT:
        JOURNAL.setdefault(order_id, {})[step] = outcome


def call_loyalty_api(order: OrderCreated, attempt: int) -> int:
    """A flaky remote service: times out once for o-1, always fails for customer-9."""
    if order.order_id == "o-1" and attempt == 1:
        raise TimeoutError("loyalty API did not answer within 1s")
    if order.customer == "customer-9":
        raise RuntimeError("loyalty account of customer-9 is locked")
    return order.amount_cents // 100


# --- the consumers ----------------------------------------------------------------------------

router = Router()

LOYALTY_RETRY = RetryPolicy(max_attempts=3, backoff=unimq.exponential(initial=0.2, factor=2, max=2))


@router.subscriber(ORDERS_CREATED, group="inventory")
async def reserve_stock(order: OrderCreated, message: Message) -> None:
    tenant = message.headers.get("tenant", "?")
    say(
        "inventory",
        f"reserved {order.quantity} x {order.item} for {order.order_id} (tenant {tenant})",
    )
    record(order.order_id, "inventory", f"reserved {order.quantity} x {order.item}")


@router.subscriber(ORDERS_CREATED, group="billing")
async def charge(order: OrderCreated) -> None:
    if order.payment == "bank-transfer":
        say("billing", f"{order.order_id} is paid by bank transfer; waiting for the money")
        record(order.order_id, "billing", "awaiting transfer")
        return
    PAID.add(order.order_id)
    say(
        "billing",
        f"charged {order.amount_cents / 100:.2f} EUR to {order.customer}'s card "
        f"for {order.order_id}",
    )
    record(order.order_id, "billing", "charged")


@router.subscriber(ORDERS_CREATED, group="email", concurrency=4)
def send_confirmation(order: OrderCreated) -> None:
    # A plain def: unimq calls it in a worker thread, so blocking I/O (SMTP, requests, ...)
    # never stalls the event loop.
    time.sleep(0.05)  # the SMTP round trip
    thread = threading.current_thread().name
    say("email", f"sent confirmation of {order.order_id} to {order.customer} (thread {thread})")
    record(order.order_id, "email", "sent")


@router.subscriber(ORDERS_CREATED, group="loyalty", retry=LOYALTY_RETRY)
async def credit_points(order: OrderCreated, message: Message) -> None:
    # Raising is all a handler does to ask for a retry. unimq publishes a copy with the next
    # attempt number to "orders.created.loyalty.retry" after the backoff, so other orders are
    # not held up, and dead-letters the message once max_attempts is reached. message.attempt
    # travels with the message, so the limit holds across processes and restarts.
    # (For a failure that no retry can fix, raise unimq.Reject("why") to dead-letter at once.)
    try:
        points = call_loyalty_api(order, message.attempt)
    except Exception as exc:
        if message.attempt < LOYALTY_RETRY.max_attempts:
            pause = LOYALTY_RETRY.delay_for(message.attempt)
            next_step = f"unimq will retry in {pause:g}s"
        else:
            next_step = "no attempts left; unimq dead-letters it"
        say("loyalty", f"{order.order_id} attempt {message.attempt} failed: {exc}; {next_step}")
        raise
    on_attempt = f" on attempt {message.attempt}" if message.attempt > 1 else ""
    say("loyalty", f"credited {points} points to {order.customer} for {order.order_id}{on_attempt}")
    record(order.order_id, "loyalty", f"{points} points{on_attempt}")


DLQ_HEADERS = (
    "unimq-dlq-reason",  # max-attempts, rejected, non-retryable or decode-error
    "unimq-error-type",
    "unimq-error-message",
    "unimq-attempts",
    "unimq-original-topic",
    "unimq-original-group",
    "unimq-failed-at",
)


@router.subscriber(LOYALTY_DLQ, group="dlq-inspector")
async def inspect_dead_letter(order: OrderCreated, message: Message) -> None:
    # A DLQ is an ordinary topic. The copy keeps the original body, key, headers and id, and adds
    # diagnostic headers. Replaying it is publishing it back to "orders.created".
    headers = message.headers
    say(
        "dlq",
        f"{order.order_id} dead-lettered after {headers['unimq-attempts']} attempts: "
        f"{headers['unimq-error-type']}: {headers['unimq-error-message']}",
    )
    for name in DLQ_HEADERS:
        say("dlq", f"    {name}: {headers.get(name)}")
    say(
        "dlq",
        f"    same id as published: {message.id}; "
        f"publisher's header tenant={headers.get('tenant')}",
    )
    record(order.order_id, "loyalty", f"dead-lettered after {headers['unimq-attempts']} attempts")


@router.subscriber(PAYMENT_DUE, group="payments")
async def close_if_unpaid(due: PaymentDue) -> None:
    if due.order_id in PAID:
        say("payments", f"{due.order_id} is paid; nothing to close")
        record(due.order_id, "payments", "paid")
        return
    waited = PAYMENT_TIMEOUT.total_seconds()
    say(
        "payments",
        f"closing unpaid order {due.order_id} after {waited:g}s; stock goes back on sale",
    )
    record(due.order_id, "payments", f"closed unpaid after {waited:g}s")


# The broker: memory://orders unless UNIMQ_URL says otherwise. `unimq run` imports this.
broker = Broker.from_env(default_url="memory://orders")
broker.include_router(router)


# --- the demo driver: only runs from __main__ ----------------------------------------------------

ORDERS = [
    OrderCreated(
        order_id="o-1", customer="customer-7", item="widget", quantity=3, amount_cents=3000
    ),
    OrderCreated(
        order_id="o-2",
        customer="customer-8",
        item="gadget",
        quantity=1,
        amount_cents=12900,
        payment="bank-transfer",
    ),
    OrderCreated(
        order_id="o-3", customer="customer-9", item="widget", quantity=2, amount_cents=2000
    ),
]


async def run_demo(timeout: float) -> bool:
    say("demo", f"broker {broker.url.redacted()} (set UNIMQ_URL to use RabbitMQ, Kafka, ...)")
    async with broker:  # connect, declare topics/groups, start every subscriber
        for order in ORDERS:
            receipt = await broker.publish(
                ORDERS_CREATED,
                order,
                key=order.customer,  # partition/ordering key
                headers={"tenant": "acme"},
            )
            say(
                "order-service",
                f"published OrderCreated {order.order_id} (id {receipt.message_id})",
            )
            await broker.publish(
                PAYMENT_DUE, PaymentDue(order_id=order.order_id), delay=PAYMENT_TIMEOUT
            )
            check_in = PAYMENT_TIMEOUT.total_seconds()
            say("order-service", f"scheduled a payment check for {order.order_id} in {check_in:g}s")
            await asyncio.sleep(0.1)  # let each order's story print before the next one starts

        done = await wait_for_journal(timeout)
        if done and broker.url.scheme == "memory":
            # Every outcome is in; drain() returns once nothing is in flight any more (each
            # message acked), so the shutdown below leaves nothing half-done. It does not wait
            # for delayed messages that are not due yet, which is why we waited above first.
            await broker.drain(timeout=5)
    return done


async def wait_for_journal(timeout: float) -> bool:
    """Wait until every order has an outcome for every step (on any backend), or time out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with _OUTPUT:
            complete = all(len(JOURNAL.get(o.order_id, {})) == len(STEPS) for o in ORDERS)
        if complete:
            return True
        await asyncio.sleep(0.05)
    return False


def print_summary(done: bool) -> None:
    print()
    print("Summary" if done else "Summary (INCOMPLETE: timed out waiting for the steps marked '-')")
    for order in ORDERS:
        steps = JOURNAL.get(order.order_id, {})
        print(
            f"  {order.order_id}: " + "; ".join(f"{step} {steps.get(step, '-')}" for step in STEPS)
        )
    print(f"  finished in {time.monotonic() - _STARTED:.1f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The unimq order-processing demo.")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="show unimq's own logs (-v: INFO, -vv: DEBUG)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=PAYMENT_TIMEOUT.total_seconds() + 20,
        help="give up after this many seconds (default: payment timeout + 20)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stdout, format="        (log) %(levelname)s %(name)s: %(message)s"
    )
    # unimq logs every connect, subscribe and retry at INFO; keep the narrative readable.
    logging.getLogger("unimq").setLevel(
        logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING
    )
    done = asyncio.run(run_demo(args.timeout))
    print_summary(done)
    return 0 if done else 1


if __name__ == "__main__":
    raise SystemExit(main())
