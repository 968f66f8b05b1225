"""``unimq outbox relay|status``: run a transactional outbox's relay on its own, or look at
its backlog (docs/consistency.md).

The database URL is the positional ``DB_URL`` or ``UNIMQ_OUTBOX_URL`` (prefer the variable:
a password on the command line is visible to other users in the process list); the broker URL
comes from ``--url`` or ``UNIMQ_URL`` with the ``UNIMQ_*`` transport options, as for
``unimq dlq``. Needs the SQL plugin: ``pip install 'unimq[sql]'``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import signal
from typing import Any

from .cli_operations import UsageError, broker_for
from .errors import MissingDependencyError

log = logging.getLogger("unimq.cli")

#: How often ``unimq outbox relay`` logs its progress (seconds).
PROGRESS_EVERY = 10.0


def add_commands(commands: Any) -> None:
    """Register ``outbox relay`` and ``outbox status`` on the ``unimq`` parser's subcommands."""
    outbox = commands.add_parser(
        "outbox",
        help="run a transactional outbox's relay, or show its backlog",
        description="The transactional outbox of unimq_sql.SQLOutbox (docs/consistency.md). "
        "DB_URL defaults to UNIMQ_OUTBOX_URL; the broker URL comes from --url or UNIMQ_URL.",
    )
    actions = outbox.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)

    relay = actions.add_parser(
        "relay",
        help="relay committed outbox rows to the broker until SIGINT/SIGTERM",
        description="Publish the committed rows of the outbox table to the broker, then mark "
        "them sent, until SIGINT or SIGTERM. Several relays may run at once on PostgreSQL. "
        "A service whose Broker has outbox= relays by itself; this runs one without it.",
    )
    _common(relay)
    relay.add_argument("--url", help="broker URL (default: UNIMQ_URL)")
    relay.add_argument("--batch-size", type=_positive_int, default=500, help="rows per batch")
    relay.add_argument(
        "--retention",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="keep sent rows this long before purging them (3600; 0 deletes at once)",
    )
    relay.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on http://ADDR:PORT/metrics (needs unimq[prometheus])",
    )
    relay.add_argument(
        "--metrics-addr", default="127.0.0.1", metavar="ADDR", help="bind address (127.0.0.1)"
    )
    relay.set_defaults(func=_relay)

    status = actions.add_parser("status", help="backlog, oldest age and failed rows")
    _common(status)
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(func=_status)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "db_url", nargs="?", metavar="DB_URL", help="database URL (default: UNIMQ_OUTBOX_URL)"
    )
    parser.add_argument("--table", default="unimq_outbox", help="outbox table (unimq_outbox)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _outbox(args: argparse.Namespace, **options: Any) -> Any:
    url = args.db_url or os.environ.get("UNIMQ_OUTBOX_URL")
    if not url:
        raise UsageError("no database URL: pass DB_URL or set UNIMQ_OUTBOX_URL")
    try:
        sql = importlib.import_module("unimq_sql")
        outbox_class = sql.SQLOutbox
    except ImportError as exc:
        raise MissingDependencyError(
            f"the outbox needs the SQL plugin: pip install 'unimq[sql]' ({exc})"
        ) from None
    return outbox_class(url, table=args.table, **options)


def _relay(args: argparse.Namespace) -> int:
    if args.retention < 0:
        raise UsageError("--retention must not be negative")
    outbox = _outbox(args, batch_size=args.batch_size, retention=args.retention)
    broker = broker_for(args.url)
    if args.metrics_port is not None:
        try:
            prometheus = importlib.import_module("unimq_prometheus")
        except ImportError as exc:
            raise MissingDependencyError(
                f"--metrics-port needs pip install 'unimq[prometheus]' ({exc})"
            ) from None
        metrics = prometheus.PrometheusMetrics()
        metrics.instrument(broker)
        prometheus.OutboxMetrics(outbox).register(metrics.registry)
        metrics.serve(args.metrics_port, args.metrics_addr)
    broker.outbox = outbox
    return asyncio.run(_serve(broker, outbox))


async def _serve(broker: Any, outbox: Any) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await broker.connect()
        log.info("relaying %r to %s; press Ctrl+C to stop", outbox, broker.url.redacted())
        reported = -1
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), PROGRESS_EVERY)
            except asyncio.TimeoutError:
                pass
            relay = outbox.relay
            if relay is not None and relay.relayed != reported:
                reported = relay.relayed
                status = relay.last_status
                log.info(
                    "outbox: %d rows relayed, %d failed; backlog %s",
                    relay.relayed,
                    relay.failed,
                    _describe(status) if status is not None else "unknown",
                )
    finally:
        await broker.stop()
        await outbox.close()
    log.info("outbox relay stopped cleanly")
    return 0


def _describe(status: Any) -> str:
    age = "" if status.oldest_age is None else f", oldest {status.oldest_age:.1f}s"
    return f"{status.pending}{age}"


def _status(args: argparse.Namespace) -> int:
    outbox = _outbox(args, create_table=False)

    async def read() -> Any:
        try:
            return await outbox.status()
        finally:
            await outbox.close()

    try:
        status = asyncio.run(read())
    except Exception as exc:
        if type(exc).__module__.startswith(("sqlalchemy", "psycopg", "sqlite3", "aiosqlite")):
            mask = importlib.import_module("unimq_sql.urls").mask
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            url = args.db_url or os.environ.get("UNIMQ_OUTBOX_URL", "")
            log.error("cannot read the outbox %r: %s", outbox, mask(first_line, url))
            return 1
        raise
    if args.json:
        print(json.dumps(status._asdict()))
    else:
        age = "-" if status.oldest_age is None else f"{status.oldest_age:.1f}s"
        print(
            f"pending {status.pending}  oldest {age}  failed {status.failed}  "
            f"sent (kept) {status.sent}"
        )
    return 0
