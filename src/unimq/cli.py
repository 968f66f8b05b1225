"""The ``unimq`` command: run a service's subscribers, publish a message, test an adapter."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import logging
import math
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from . import __version__
from .broker import Broker
from .cli_asyncapi import add_command as add_asyncapi_command
from .cli_operations import UsageError, add_commands, broker_for, refuse_memory_from_shell
from .cli_outbox import add_commands as add_outbox_commands
from .errors import MissingDependencyError, UnimqError
from .logs import DeliveryContextFilter
from .plugins import missing_extra, transport_registry
from .url import mask_secrets, option_secrets, redact

EXIT_USAGE = 2
EXIT_ERROR = 1


def main(argv: Sequence[str] | None = None) -> int:
    """The ``unimq`` command; returns the exit status (never raises ``SystemExit``).

    ``argv`` ``None`` means the process's command line: a shell, where ``memory://`` cannot
    reach anything (see :func:`unimq.cli_operations.refuse_memory_from_shell`).
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: usage errors (2), --help and --version (0)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    args.from_shell = argv is None
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s%(unimq_context)s",
    )
    for handler in logging.getLogger().handlers:  # the message a log line is about (unimq.logs)
        handler.addFilter(DeliveryContextFilter())
    mask_logs(())
    try:
        result: int = args.func(args)
        return result
    except UsageError as exc:
        print(f"unimq {args.command}: error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except (UnimqError, OSError) as exc:  # OSError: e.g. the metrics port is taken
        print(f"unimq {args.command}: {type(exc).__name__}: {redact(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


class MaskingFormatter(logging.Formatter):
    """Masks every log line the command prints, third-party libraries' included (a client
    library may log its connection URL): URL passwords, ``name=value`` secret options, and the
    loaded broker's own secrets."""

    def __init__(self, base: logging.Formatter | None, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self.base = base or logging.Formatter()
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(self.base.format(record), self.secrets)


def _secrets_of(broker: Broker) -> tuple[str, ...]:
    return (*broker.url.secrets, *option_secrets(broker.transport_options))


def mask_logs(secrets: tuple[str, ...]) -> None:
    """Put a :class:`MaskingFormatter` (knowing ``secrets``) on the root logger's handlers."""
    for handler in logging.getLogger().handlers:
        current = handler.formatter
        if isinstance(current, MaskingFormatter):
            current.secrets = secrets
        else:
            handler.setFormatter(MaskingFormatter(current, secrets))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unimq",
        description="Run unimq services, publish messages and test broker adapters.",
    )
    parser.add_argument("--version", action="version", version=f"unimq {__version__}")
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS, help=LOG_LEVEL_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run a broker's subscribers until SIGINT/SIGTERM",
        description="Import MODULE:ATTR (a Broker, or a function returning one), start its "
        "subscribers, and run until SIGINT or SIGTERM; then stop taking messages, let in-flight "
        "handlers finish (the broker's graceful_timeout) and disconnect.",
    )
    run.add_argument("target", metavar="MODULE:ATTR", help="e.g. myservice.app:broker")
    run.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus metrics on http://ADDR:PORT/metrics (needs unimq[prometheus])",
    )
    run.add_argument(
        "--metrics-addr", default="127.0.0.1", metavar="ADDR", help="bind address (127.0.0.1)"
    )
    run.add_argument(
        "--otel",
        action="store_true",
        help="trace with OpenTelemetry through the global tracer provider (needs unimq[otel])",
    )
    run.set_defaults(func=_run)

    publish = commands.add_parser(
        "publish",
        help="publish one message",
        description="Publish one message durably and print its id. The broker URL comes from "
        "--url or UNIMQ_URL.",
    )
    publish.add_argument("topic", help="the topic to publish to")
    publish.add_argument("body", nargs="?", help="the body (text); omit to read standard input")
    publish.add_argument("--url", help="broker URL (default: $UNIMQ_URL)")
    publish.add_argument(
        "--json", action="store_true", help="parse the body as JSON and send it as JSON"
    )
    publish.add_argument("--key", help="ordering / partition key")
    publish.add_argument("--header", action="append", default=[], metavar="NAME=VALUE")
    publish.add_argument(
        "--delay", type=_seconds, metavar="SECONDS", help="deliver after this many seconds"
    )
    publish.add_argument("--id", dest="message_id", help="message id (default: a new UUIDv7)")
    publish.set_defaults(func=_publish)

    schemes = commands.add_parser("schemes", help="list the installed transports")
    schemes.set_defaults(func=_schemes)

    conformance = commands.add_parser(
        "conformance",
        help="run the conformance suite against a broker URL",
        description="Run unimq's conformance suite (needs pytest and pytest-asyncio: "
        "pip install 'unimq[testing]') against URL. Restart cases are skipped here; run them "
        "from a test module with a Backend(restart=...) fixture.",
    )
    conformance.add_argument("url", help="the broker to test, e.g. amqp://127.0.0.1:5672/")
    conformance.add_argument("pytest_args", nargs=argparse.REMAINDER, help="extra pytest arguments")
    conformance.set_defaults(func=_conformance)
    add_commands(commands)
    add_outbox_commands(commands)
    add_asyncapi_command(commands)
    _log_level_everywhere(commands)
    return parser


LOG_LEVELS = ["debug", "info", "warning", "error"]
LOG_LEVEL_HELP = "what unimq logs to standard error (info); also accepted after the command"


def _log_level_everywhere(commands: Any) -> None:
    """``--log-level`` after the (sub)command too: ``unimq run app:broker --log-level debug``."""
    for sub in commands.choices.values():
        sub.add_argument(
            "--log-level", default=argparse.SUPPRESS, choices=LOG_LEVELS, help=LOG_LEVEL_HELP
        )
        for action in sub._subparsers._group_actions if sub._subparsers else ():
            _log_level_everywhere(action)


def _port(text: str) -> int:
    """A TCP port for argparse (1-65535): a clean usage error instead of an OverflowError."""
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"expected a TCP port from 1 to 65535, got {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    """A finite number of seconds >= 0 for argparse (``inf`` and ``nan`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(
            f"expected a finite, non-negative number of seconds, got {text!r}"
        )
    return value


# -- run ----------------------------------------------------------------------------------


def load_broker(target: str) -> Broker:
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise UsageError(f"expected MODULE:ATTR (e.g. myservice.app:broker), got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise UsageError(f"cannot import module {module_name!r}: {exc}") from None
        raise
    try:
        obj: Any = module
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise UsageError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if isinstance(obj, type):  # a class is callable, but calling it is not what was meant
        raise UsageError(
            f"{target} is a class ({obj.__name__}), not a Broker: point at a Broker instance "
            "or at a function that returns one"
        )
    if callable(obj) and not isinstance(obj, Broker):
        try:  # a factory must be callable without arguments: say so rather than a TypeError
            inspect.signature(obj).bind()
        except TypeError as exc:
            raise UsageError(
                f"{target} must be a Broker or a function returning one that takes no "
                f"arguments ({exc})"
            ) from None
        except ValueError:
            pass  # no signature to check (a builtin): just call it
        obj = obj()
    if not isinstance(obj, Broker):
        raise UsageError(f"{target} is a {type(obj).__name__}, not a unimq Broker")
    return obj


def _run(args: argparse.Namespace) -> int:
    broker = load_broker(args.target)
    mask_logs(_secrets_of(broker))
    if args.metrics_port is not None:
        metrics = _contrib("unimq_prometheus", "prometheus").PrometheusMetrics()
        metrics.instrument(broker)
        metrics.serve(args.metrics_port, args.metrics_addr)
    if args.otel:
        _contrib("unimq_otel", "otel").OpenTelemetryTracing().instrument(broker)
    return asyncio.run(_serve(broker))


def _contrib(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module} needs its extra: pip install 'unimq[{extra}]' ({exc})"
        ) from None


async def _serve(broker: Broker) -> int:
    log = logging.getLogger("unimq.cli")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info(
                "received %s: finishing in-flight messages (up to %gs); send again to force exit",
                signal.Signals(signum).name,
                broker.graceful_timeout,
            )
            stop.set()
        else:
            log.warning("received %s again: exiting now", signal.Signals(signum).name)
            os._exit(130)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    async with broker:
        log.info(
            "running %d subscriber(s) on %s; press Ctrl+C to stop",
            len(broker.subscribers),
            broker.url.redacted(),
        )
        await stop.wait()
    log.info("stopped cleanly")
    return 0


# -- publish ------------------------------------------------------------------------------


def _publish(args: argparse.Namespace) -> int:
    broker = broker_for(args.url)  # --url or UNIMQ_URL, with the UNIMQ_* options, as dlq/lag
    mask_logs(_secrets_of(broker))
    text = args.body if args.body is not None else sys.stdin.read()
    body: Any = text
    if args.json:
        try:
            body = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--json: the body is not valid JSON: {exc}") from None
    headers: dict[str, str] = {}
    for item in args.header:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--header expects NAME=VALUE, got {item!r}")
        headers[name] = value

    async def send() -> str:
        await broker.connect()
        try:
            receipt = await broker.publish(
                args.topic,
                body,
                key=args.key,
                headers=headers,
                delay=args.delay,
                message_id=args.message_id,
            )
        finally:
            await broker.stop()
        return receipt.message_id

    message_id = asyncio.run(send())
    if refuse_memory_from_shell(args, broker, "published to"):
        return EXIT_ERROR
    print(message_id)
    logging.getLogger("unimq.cli").info(
        "published %s to %r on %s", message_id, args.topic, broker.url.redacted()
    )
    return 0


# -- schemes ------------------------------------------------------------------------------


def _schemes(args: argparse.Namespace) -> int:
    registry = transport_registry()
    for scheme in registry.schemes():
        entry = registry.get(scheme)
        extra = missing_extra(entry.factory)
        needs = f"\t(not installed: pip install 'unimq[{extra}]')" if extra else ""
        print(f"{scheme}://\t{entry.description}{needs}")
    return 0


# -- conformance --------------------------------------------------------------------------


def _conformance(args: argparse.Namespace) -> int:
    try:
        import pytest
    except ImportError:
        raise UsageError(
            "the conformance suite needs pytest: pip install 'unimq[testing]'"
        ) from None
    scheme = args.url.split("://", 1)[0].lower() if "://" in args.url else ""
    if scheme not in transport_registry().schemes():
        raise UsageError(f"no transport installed for {redact(args.url)!r}; see 'unimq schemes'")
    from .testing.conformance import command  # the suite's own test module: no glue written

    os.environ["UNIMQ_CONFORMANCE_URL"] = args.url  # not written to disk: it may hold a password
    extra = [a for a in args.pytest_args if a != "--"]
    with tempfile.TemporaryDirectory(prefix="unimq-conformance-") as folder:
        code = pytest.main(
            [
                str(command.__file__),
                "-p",
                "no:cacheprovider",
                "-o",
                "asyncio_mode=auto",
                "--rootdir",
                folder,
                *extra,
            ]
        )
    return int(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
