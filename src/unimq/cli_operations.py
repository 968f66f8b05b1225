"""``unimq dlq list|show|replay|purge``, ``unimq lag``, ``unimq rewind``: steering a running system.

The broker comes from ``--url`` or ``UNIMQ_URL``, with transport options from ``UNIMQ_*``
settings (so ``UNIMQ_ROCKETMQ_NAMESRV`` etc. apply here as they do to the service). These
commands only connect: they start no subscribers and never consume from the service's groups.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any, TextIO, TypeVar

from .broker import Broker
from .dlq import DeadLetter, DeadLetterQueue, Outcome, Selection
from .settings import options_from_env
from .transport import SupportsBacklogAge, SupportsLag

T = TypeVar("T")


class UsageError(Exception):
    """A command-line mistake (re-raised by :mod:`unimq.cli` as its own usage error)."""


def add_commands(commands: Any) -> None:
    """Register ``dlq``, ``lag`` and ``rewind`` on the ``unimq`` parser's subcommands."""
    dlq = commands.add_parser(
        "dlq",
        help="inspect, replay and purge a dead-letter topic",
        description="Inspect and steer a dead-letter topic (e.g. orders.created.inventory.dlq). "
        "The broker URL comes from --url or UNIMQ_URL.",
    )
    actions = dlq.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="count the dead letters and show a page of them")
    _common(listing)
    listing.add_argument("--limit", type=_positive_int, default=20, help="page size (20)")
    _selection(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(func=_list)

    show = actions.add_parser("show", help="one dead letter in full: headers and body")
    _common(show)
    show.add_argument("message_id", metavar="ID", help="the dead letter's message id")
    show.add_argument("--json", action="store_true", help="print it as JSON")
    show.set_defaults(func=_show)

    replay = actions.add_parser(
        "replay",
        help="publish dead letters back to their original topic, then remove them",
        description="Publish the selected dead letters back to their original topic (attempts "
        "reset to 1, a unimq-replayed-at header added, same id and key), each one durably "
        "before it is removed from the DLQ: an interrupted replay never loses a message "
        "(at worst the one in progress is replayed twice). Give --all or a filter.",
    )
    _common(replay)
    _selection(replay, everything=True)
    replay.add_argument("--to", dest="to_topic", metavar="TOPIC", help="replay to this topic")
    replay.add_argument("--limit", type=_positive_int, help="replay at most this many")
    replay.add_argument("--dry-run", action="store_true", help="only count what would be replayed")
    replay.set_defaults(func=_replay)

    purge = actions.add_parser(
        "purge",
        help="delete dead letters for good (asks for confirmation)",
        description="Delete the selected dead letters for good. Asks you to type the topic "
        "name to confirm, unless --yes is given (required when not on a terminal).",
    )
    _common(purge)
    _selection(purge, everything=True)
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    purge.set_defaults(func=_purge)

    lag = commands.add_parser(
        "lag",
        help="how many messages a consumer group has not consumed yet",
        description="Print the number of messages of TOPIC that GROUP has not consumed yet, "
        "as the broker reports it (see docs/operations.md).",
    )
    lag.add_argument("topic", help="the topic the group consumes")
    lag.add_argument("group", help="the subscriber's consumer group")
    lag.add_argument("--url", help="broker URL (default: $UNIMQ_URL)")
    lag.add_argument("--json", action="store_true", help="print {messages, age_seconds} as JSON")
    lag.set_defaults(func=_lag)

    rewind = commands.add_parser(
        "rewind",
        help="move a consumer group back in time so it consumes again",
        description="Move GROUP back on TOPIC so that it consumes again every message "
        "published since --to TIME or in the last --by DURATION (docs/operations.md). Stop "
        "the group's consumers first on Kafka. Idempotent subscribers skip what they handled.",
    )
    rewind.add_argument("topic", help="the topic the group consumes")
    rewind.add_argument("group", help="the subscriber's consumer group")
    when = rewind.add_mutually_exclusive_group(required=True)
    when.add_argument(
        "--to", type=_time, metavar="TIME", help="ISO-8601 time (naive = UTC) or epoch seconds"
    )
    when.add_argument(
        "--by", type=_duration, metavar="DURATION", help="how far back: 90s, 10m, 1h30m, 2d"
    )
    rewind.add_argument("--dry-run", action="store_true", help="only count, move nothing")
    rewind.add_argument("--url", help="broker URL (default: $UNIMQ_URL)")
    rewind.set_defaults(func=_rewind)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topic", help="the dead-letter topic, e.g. orders.created.inventory.dlq")
    parser.add_argument("--url", help="broker URL (default: $UNIMQ_URL)")


def _selection(parser: argparse.ArgumentParser, everything: bool = False) -> None:
    if everything:
        parser.add_argument("--all", action="store_true", help="take every dead letter")
    parser.add_argument("--id", dest="ids", action="append", default=[], help="by id (repeat)")
    parser.add_argument(
        "--reason",
        dest="reasons",
        action="append",
        default=[],
        help="by unimq-dlq-reason: max-attempts, rejected, non-retryable, decode-error",
    )
    parser.add_argument(
        "--error-type",
        dest="error_types",
        action="append",
        default=[],
        metavar="PATTERN",
        help="by error type, shell-style (e.g. '*TimeoutError')",
    )
    parser.add_argument("--key", dest="keys", action="append", default=[], help="by key")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _selection_of(args: argparse.Namespace, required: bool) -> Selection:
    selection = Selection(
        ids=frozenset(args.ids),
        reasons=frozenset(args.reasons),
        error_types=frozenset(args.error_types),
        keys=frozenset(args.keys),
    )
    if required:
        if selection.everything and not args.all:
            raise UsageError("say what to take: --all, or filters (--id, --reason, ...)")
        if args.all and not selection.everything:
            raise UsageError("--all cannot be combined with filters")
    return selection


def broker_for(url: str | None) -> Broker:
    """The broker of ``--url`` (or ``UNIMQ_URL``) with the ``UNIMQ_*`` transport options."""
    environ = dict(os.environ)
    if url:
        environ["UNIMQ_URL"] = url
    if not environ.get("UNIMQ_URL"):
        raise UsageError("no broker URL: pass --url or set UNIMQ_URL")
    resolved, options = options_from_env(environ)
    return Broker(resolved, **options)


def refuse_memory_from_shell(args: argparse.Namespace, broker: Broker, what: str) -> bool:
    """``memory://`` from a shell reaches nothing: its hub lives in this process, which ends
    with the command. Say so on standard error (``True``) instead of reporting a success that
    no other process can see; from code (``unimq.cli.main([...])``) the hub is shared."""
    if broker.url.scheme != "memory" or not getattr(args, "from_shell", False):
        return False
    print(
        f"unimq {args.command}: memory:// lives inside one process: the command {what} an "
        "in-process hub that ends with it, and no other process can see it. Use a broker URL "
        "(amqp://, kafka://, rocketmq://), or call unimq.cli.main([...]) from the process that "
        "runs the subscribers.",
        file=sys.stderr,
    )
    return True


def _connected(args: argparse.Namespace, work: Callable[[Broker], Awaitable[T]]) -> T | int:
    broker = broker_for(args.url)
    if refuse_memory_from_shell(args, broker, "looked at"):
        return 1

    async def run() -> T:
        await broker.connect()
        try:
            return await work(broker)
        finally:
            await broker.stop()

    return asyncio.run(run())


# -- list / show ----------------------------------------------------------------------------


def _list(args: argparse.Namespace) -> int:
    selection = _selection_of(args, required=False)

    async def work(broker: Broker) -> int:
        page = await DeadLetterQueue(broker, args.topic).list(args.limit, selection)
        if args.json:
            for letter in page.letters:
                print(json.dumps(_as_json(letter, body=False)))
            return 0
        shown = f"showing {len(page.letters)}" + ("" if selection.everything else " matching")
        print(f"{args.topic}: {page.total} dead letter(s) ({shown})")
        if page.letters:
            print(_table(page.letters))
        return 0

    return _connected(args, work)


def _table(letters: list[DeadLetter]) -> str:
    rows = [("ID", "KEY", "REASON", "ATTEMPTS", "FAILED AT", "ERROR")]
    for letter in letters:
        error = letter.error_type.rsplit(".", 1)[-1]
        if letter.error_message:
            error = f"{error}: {letter.error_message}" if error else letter.error_message
        rows.append(
            (
                letter.id,
                letter.key or "-",
                letter.reason or "-",
                str(letter.attempts) if letter.attempts is not None else "-",
                letter.failed_at or "-",
                _clip(error.replace("\n", " "), 80) or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:5])) + "  " + row[5]
        for row in rows
    )


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _show(args: argparse.Namespace) -> int:
    async def work(broker: Broker) -> int:
        letter = await DeadLetterQueue(broker, args.topic).show(args.message_id)
        if letter is None:
            print(f"no dead letter with id {args.message_id!r} in {args.topic}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(_as_json(letter, body=True), indent=2))
            return 0
        print(f"id:             {letter.id}")
        print(f"key:            {letter.key or '-'}")
        print(f"original topic: {letter.original_topic or '-'}")
        print(f"original group: {letter.original_group or '-'}")
        print(f"reason:         {letter.reason or '-'}")
        print(f"error:          {letter.error_type or '-'}: {letter.error_message or '-'}")
        print(f"attempts:       {letter.attempts if letter.attempts is not None else '-'}")
        print(f"failed at:      {letter.failed_at or '-'}")
        print("headers:")
        for name, value in sorted(letter.headers.items()):
            print(f"  {name}: {value}")
        text, encoding = _body_text(letter.body)
        print(f"body ({len(letter.body)} bytes, {encoding}):")
        print(text)
        return 0

    return _connected(args, work)


def _body_text(body: bytes) -> tuple[str, str]:
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), "base64"


def _as_json(letter: DeadLetter, body: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": letter.id,
        "key": letter.key,
        "reason": letter.reason,
        "error_type": letter.error_type,
        "error_message": letter.error_message,
        "attempts": letter.attempts,
        "failed_at": letter.failed_at,
        "original_topic": letter.original_topic,
        "original_group": letter.original_group,
    }
    if body:
        text, encoding = _body_text(letter.body)
        data.update(headers=dict(letter.headers), body=text, body_encoding=encoding)
    return data


# -- replay / purge -------------------------------------------------------------------------


class ProgressBar:
    """``replaying ████████░░░░ 412/1000  41%  230 msg/s`` on a terminal; a log line every
    10% (and at the end) otherwise, so CI logs and pipes stay readable."""

    WIDTH = 24

    def __init__(self, verb: str, stream: TextIO | None = None) -> None:
        self.verb = verb
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._last_decile = -1
        self._total = 0

    def __call__(self, done: int, total: int) -> None:
        self._total = max(total, done)
        total = self._total
        fraction = done / total if total else 1.0
        rate = done / max(time.monotonic() - self.started, 1e-6)
        if self.tty:
            filled = int(self.WIDTH * fraction)
            bar = "█" * filled + "░" * (self.WIDTH - filled)
            self.stream.write(
                f"\r{self.verb} {bar} {done}/{total} {fraction:4.0%} {rate:7.0f} msg/s"
            )
            self.stream.flush()
            return
        decile = int(fraction * 10)
        if decile > self._last_decile and done:
            self._last_decile = decile
            line = f"{self.verb}: {done}/{total} ({fraction:.0%}, {rate:.0f} msg/s)"
            print(line, file=self.stream)

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _replay(args: argparse.Namespace) -> int:
    selection = _selection_of(args, required=True)

    async def work(broker: Broker) -> int:
        dlq = DeadLetterQueue(broker, args.topic)
        if args.dry_run:
            page = await dlq.list(args.limit or sys.maxsize, selection)
            print(f"would replay {len(page.letters)} of {page.total} dead letter(s)")
            return 0
        # filtered: the bar counts dead letters examined (taken or left), so it ends at 100%
        progress = ProgressBar("replaying" if selection.everything else "replaying, examined")
        try:
            outcome = await dlq.replay(
                selection, to_topic=args.to_topic, progress=progress, limit=args.limit
            )
        finally:
            progress.finish()
        _report("replayed", outcome, args.topic)
        return 0

    return _connected(args, work)


def _purge(args: argparse.Namespace) -> int:
    selection = _selection_of(args, required=True)

    async def work(broker: Broker) -> int:
        dlq = DeadLetterQueue(broker, args.topic)
        if not args.yes:
            if not sys.stdin.isatty():
                raise UsageError("refusing to purge without --yes: stdin is not a terminal")
            page = await dlq.list(sys.maxsize, selection)
            print(f"{len(page.letters)} of {page.total} dead letter(s) in {args.topic} match.")
            answer = await asyncio.to_thread(
                input, f"Type the topic name ({args.topic}) to delete them for good: "
            )
            if answer.strip() != args.topic:
                print("not confirmed; nothing deleted", file=sys.stderr)
                return 1
        progress = ProgressBar("purging" if selection.everything else "purging, examined")
        try:
            outcome = await dlq.purge(selection, progress=progress)
        finally:
            progress.finish()
        _report("purged", outcome, args.topic)
        return 0

    return _connected(args, work)


def _report(verb: str, outcome: Outcome, topic: str) -> None:
    kept = f"; {outcome.kept} left in {topic}" if outcome.kept else ""
    print(f"{verb} {outcome.done} dead letter(s){kept}")


# -- lag ------------------------------------------------------------------------------------


def _lag(args: argparse.Namespace) -> int:
    async def work(broker: Broker) -> int:
        transport = broker.transport
        if not isinstance(transport, SupportsLag):
            print(f"the {broker.url.scheme}:// transport cannot report lag", file=sys.stderr)
            return 1
        value = await transport.lag(args.topic, args.group)
        if value is None:
            print(f"unknown: the broker has no lag for group {args.group!r} on {args.topic!r}")
            return 1
        age = None
        if isinstance(transport, SupportsBacklogAge):
            age = await transport.backlog_age(args.topic, args.group)
        if args.json:
            print(json.dumps({"messages": value, "age_seconds": age}))
        else:
            print(value)  # the first line stays the bare count, for scripts
            print(f"age: {'unknown' if age is None else f'{age:.1f}s'}")
        return 0

    return _connected(args, work)


# -- rewind ---------------------------------------------------------------------------------

_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([dhms])")


def _duration(text: str) -> float:
    """``90s``, ``10m``, ``1h30m``, ``2d`` or plain seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 10m, 1h30m, 2d)")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def _time(text: str) -> float:
    """ISO-8601 (``Z`` or an offset; naive = UTC) or epoch seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (ISO-8601, e.g. 2026-12-01T15:30:00Z, or epoch seconds)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _rewind(args: argparse.Namespace) -> int:
    async def work(broker: Broker) -> int:
        since = args.to if args.to is not None else broker.clock.now() - args.by
        count = await broker.rewind(args.topic, args.group, to=since, dry_run=args.dry_run)
        moment = datetime.fromtimestamp(since, tz=timezone.utc).isoformat().replace("+00:00", "Z")
        what = "unknown number of" if count is None else str(count)
        verb = "would consume" if args.dry_run else "will consume"
        print(f"{args.group} on {args.topic} {verb} {what} message(s) again, from {moment}")
        return 0

    return _connected(args, work)
