"""``@subscriber(..., transactional=True)``: consume-transform-produce in one broker transaction.

Each attempt of the handler runs inside a transaction that also consumes the delivery (Kafka:
its offset commits in the producer transaction). ``broker.publish`` inside the handler stages
into that transaction (through :data:`unimq.transactions.CURRENT`, so handler code is the same
as anywhere else). Success commits the outputs and the consumption together; a failure, a
``nack`` or a ``reject`` rolls the outputs back, so a ``read_committed`` reader sees each output
of a message exactly once however often its handler ran. Retries stay in place (a retry copy on
the broker would be a second, non-transactional write), each attempt in a fresh transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .. import transactions
from ..transport import ConsumeCommitRefused
from .host import Host
from .outcome import ACK, DROP, Outcome
from .settle import Settlement

logger = logging.getLogger("unimq.delivery")

Stage = Callable[[Settlement], Awaitable[Outcome]]


#: Re-runs of one attempt whose commit a group rebalance refused before it counts as failed.
REFUSED_COMMIT_RERUNS = 5


def transaction_stage(runtime: Host, invoke: Stage) -> Stage:
    """Wrap one attempt (``invoke``) in a consume transaction of the runtime's transport.

    A commit refused because the consumer's group membership changed (a rebalance:
    :class:`~unimq.transport.ConsumeCommitRefused`) is not the handler's failure: the attempt
    runs again in a fresh transaction without counting, up to ``REFUSED_COMMIT_RERUNS`` times,
    and a delivery whose partition went to another consumer is dropped unsettled (its new
    owner handles it).
    """
    revocable = runtime.revocable

    async def transactional(settlement: Settlement) -> Outcome:
        reruns = 0
        while True:
            try:
                return await _attempt(runtime, invoke, settlement)
            except ConsumeCommitRefused as error:
                if revocable and settlement.delivery.revoked:  # type: ignore[attr-defined]
                    return DROP  # another consumer owns it now
                reruns += 1
                if reruns > REFUSED_COMMIT_RERUNS:
                    return settlement.after_failure(error)
                logger.info(
                    "running message %s again: its transaction's commit was refused (%s); "
                    "the attempt does not count",
                    settlement.envelope.id,
                    error,
                )

    return transactional


async def _attempt(runtime: Host, invoke: Stage, settlement: Settlement) -> Outcome:
    """One attempt in one transaction; raises ConsumeCommitRefused for the caller to re-run."""
    begin = runtime.consume_transaction
    assert begin is not None
    try:
        native = await begin(settlement.delivery)
    except asyncio.CancelledError:
        raise
    except Exception as error:  # no transaction: the attempt failed before the handler
        return settlement.after_failure(error)
    tx = transactions.Transaction(
        runtime.transport, runtime.now, runtime.max_transaction_messages, native
    )
    token = transactions.CURRENT.set(tx)
    try:
        outcome = await invoke(settlement)
    except BaseException:
        await tx.finish(commit=False)
        raise
    finally:
        transactions.CURRENT.reset(token)
    if outcome is ACK and settlement.in_place is None and not settlement.settled:
        try:
            await tx.finish(commit=True)
        except (asyncio.CancelledError, ConsumeCommitRefused):
            raise
        except Exception as error:  # not durable: nothing of it is visible; try again
            return settlement.after_failure(error)
        return outcome
    await tx.finish(commit=False)
    return outcome
