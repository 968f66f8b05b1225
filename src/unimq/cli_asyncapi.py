"""``unimq asyncapi MODULE:ATTR [-o FILE]``: print or write a service's AsyncAPI 3.0 document."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_command(commands: Any) -> None:
    command = commands.add_parser(
        "asyncapi",
        help="write the AsyncAPI 3.0 document of a service",
        description="Import MODULE:ATTR (a Broker, or a function returning one; nothing is "
        "connected) and print the AsyncAPI 3.0 document of its subscribers, declared publishers "
        "(broker.publishes), retry and dead-letter topics, as JSON.",
    )
    command.add_argument("target", metavar="MODULE:ATTR", help="e.g. myservice.app:broker")
    command.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: stdout)")
    command.add_argument("--title", help="info.title (default: the module name)")
    command.add_argument("--version", dest="doc_version", default="1.0.0", help="info.version")
    command.set_defaults(func=_asyncapi)


def _asyncapi(args: argparse.Namespace) -> int:
    from .asyncapi import document
    from .cli import load_broker

    broker = load_broker(args.target)
    title = args.title or args.target.partition(":")[0]
    text = json.dumps(document(broker, title=title, version=args.doc_version), indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0
