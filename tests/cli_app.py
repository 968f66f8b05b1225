"""A service module for the CLI tests: ``unimq run tests.cli_app:broker``."""

from __future__ import annotations

from unimq import Broker, Message

broker = Broker("memory://cli-app", graceful_timeout=5)
not_a_broker = 42


@broker.subscriber("cli.events", group="cli")
async def handle(message: Message) -> None:
    print("handled", message.id, flush=True)


def make_broker() -> Broker:
    return broker
