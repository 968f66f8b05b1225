"""Logs: failed handlers with their traceback; the delivery's identity on every line."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

import unimq
from unimq import Broker, Message, Reject, RetryPolicy, fixed
from unimq.logs import DeliveryContextFilter, current_message

ROOT = Path(__file__).resolve().parent.parent


def _records(caplog: pytest.LogCaptureFixture, needle: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if needle in r.getMessage()]


async def test_retry_is_a_warning_and_dead_letter_an_error_both_with_the_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = Broker("memory://logs-tb")

    @broker.subscriber("logs.t", group="g", retry=RetryPolicy(max_attempts=2, backoff=fixed(0)))
    async def failing(message: Message) -> None:
        raise KeyError("sku-42")

    with caplog.at_level(logging.INFO, logger="unimq"):
        async with broker:
            await broker.publish("logs.t", b"x")
            await broker.drain(5)
    [retry] = _records(caplog, "retrying message")
    [dead] = _records(caplog, "dead-lettered")
    assert retry.levelno == logging.WARNING and dead.levelno == logging.ERROR
    for record in (retry, dead):
        assert record.exc_info is not None and isinstance(record.exc_info[1], KeyError)
        assert "in failing" in caplog.text  # the handler's own frame is in the traceback


async def test_in_place_retry_is_a_warning_with_the_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = Broker("memory://logs-inplace")

    @broker.subscriber(
        "logs.o", group="g", ordered=True, retry=RetryPolicy(max_attempts=2, backoff=fixed(0))
    )
    async def failing(message: Message) -> None:
        if message.attempt == 1:
            raise ValueError("first try")

    with caplog.at_level(logging.INFO, logger="unimq"):
        async with broker:
            await broker.publish("logs.o", b"x", key="k")
            await broker.drain(5)
    [retry] = _records(caplog, "in place")
    assert retry.levelno == logging.WARNING
    assert retry.exc_info is not None and isinstance(retry.exc_info[1], ValueError)


async def test_a_deliberate_reject_is_logged_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = Broker("memory://logs-reject")

    @broker.subscriber("logs.r", group="g")
    async def rejecting(message: Message) -> None:
        raise Reject("bad input")

    with caplog.at_level(logging.INFO, logger="unimq"):
        async with broker:
            await broker.publish("logs.r", b"x")
            await broker.drain(5)
    [dead] = _records(caplog, "dead-lettered")
    assert dead.levelno == logging.ERROR and dead.exc_info is None


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_the_handlers_own_log_lines_carry_the_delivery(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    broker = Broker("memory://logs-ctx")
    log = logging.getLogger("app.handler")
    caplog.handler.addFilter(DeliveryContextFilter())

    if kind == "async":

        @broker.subscriber("logs.c", group="billing")
        async def handle(message: Message) -> None:
            log.info("charging")

    else:

        @broker.subscriber("logs.c", group="billing")
        def handle_sync(message: Message) -> None:  # runs in a worker thread
            log.info("charging")

    with caplog.at_level(logging.INFO):
        async with broker:
            receipt = await broker.publish("logs.c", b"x")
            await broker.drain(5)
            log.info("outside")
    [inside] = _records(caplog, "charging")
    [outside] = _records(caplog, "outside")
    assert inside.unimq_message_id == receipt.message_id  # type: ignore[attr-defined]
    assert inside.unimq_topic == "logs.c" and inside.unimq_group == "billing"  # type: ignore[attr-defined]
    assert inside.unimq_attempt == 1  # type: ignore[attr-defined]
    assert f"id={receipt.message_id}" in inside.unimq_context  # type: ignore[attr-defined]
    assert outside.unimq_message_id == "-" and outside.unimq_context == ""  # type: ignore[attr-defined]
    assert current_message() is None


async def test_unimqs_own_lines_of_a_delivery_carry_it_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = Broker("memory://logs-own")
    caplog.handler.addFilter(DeliveryContextFilter())

    @broker.subscriber("logs.own", group="g", retry=RetryPolicy(max_attempts=2, backoff=fixed(0)))
    async def failing(message: Message) -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.INFO, logger="unimq"):
        async with broker:
            receipt = await broker.publish("logs.own", b"x")
            await broker.drain(5)
    [dead] = _records(caplog, "dead-lettered")
    assert dead.unimq_message_id == receipt.message_id  # type: ignore[attr-defined]
    assert dead.unimq_attempt == 2  # type: ignore[attr-defined]


def test_unimq_run_prints_the_delivery_context() -> None:
    code = (
        "import asyncio, logging, sys\n"
        "from unimq import cli\n"
        "cli.main(['schemes'])\n"  # installs the logging setup of the command
        "from unimq import Broker\n"
        "b = Broker('memory://logs-cli')\n"
        "@b.subscriber('logs.cli', group='g')\n"
        "async def h(m: bytes):\n"
        "    logging.getLogger('app').warning('inside the handler')\n"
        "async def go():\n"
        "    async with b:\n"
        "        await b.publish('logs.cli', b'x')\n"
        "        await b.drain(5)\n"
        "asyncio.run(go())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stderr.splitlines() if "inside the handler" in x)
    assert "[topic=logs.cli group=g id=" in line and "attempt=1]" in line


def test_public_names() -> None:
    assert unimq.logs.current_message is current_message


def test_tracking_is_off_until_asked_for() -> None:
    code = (
        "import asyncio\n"
        "import unimq\n"
        "from unimq import Broker, Message\n"
        "seen = []\n"
        "async def run():\n"
        "    b = Broker('memory://logs-off')\n"
        "    @b.subscriber('t', group='g')\n"
        "    async def h(m: Message) -> None:\n"
        "        seen.append(unimq.logs.current_message() is m)\n"
        "    async with b:\n"
        "        await b.publish('t', b'x')\n"
        "        await b.drain(5)\n"
        "asyncio.run(run())\n"
        "unimq.logs.enable()\n"
        "asyncio.run(run())\n"
        "print(seen)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[False, True]"
