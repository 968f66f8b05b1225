"""``unimq dlq`` and ``unimq lag`` on the memory backend (in-process: ``memory://NAME`` hubs live
in this process, so the command runs through ``unimq.cli.main`` rather than a subprocess; the
real-broker suite runs the same round trip as a subprocess)."""

from __future__ import annotations

import asyncio

import pytest

from unimq import Broker, Message, Reject
from unimq.cli import main
from unimq.dlq import REPLAYED_AT
from unimq.memory.hub import forget

URL = "memory://cli-operations"
DLQ = "orders.billing.dlq"


async def fill_dead_letters(bodies: list[str]) -> list[str]:
    broker = Broker(URL)

    @broker.subscriber("orders", group="billing")
    async def bill(body: str) -> None:
        raise Reject(f"refused {body}")

    async with broker:
        ids = [(await broker.publish("orders", b, key=f"k-{b}")).message_id for b in bodies]
        await broker.drain()
    return ids


async def consume_replayed(expected: int) -> list[tuple[str, int, dict[str, str]]]:
    broker = Broker(URL)
    seen: list[tuple[str, int, dict[str, str]]] = []

    @broker.subscriber("orders", group="billing")
    async def bill(message: Message) -> None:
        seen.append((message.id, message.attempt, dict(message.headers)))

    async with broker:
        await broker.drain()
    assert len(seen) == expected, seen
    return seen


@pytest.fixture(autouse=True)
def fresh_hub() -> None:
    forget("cli-operations")


def test_dlq_list_show_replay_round_trip(capsys: pytest.CaptureFixture[str]) -> None:
    first, second = asyncio.run(fill_dead_letters(["a", "b"]))

    assert main(["dlq", "list", DLQ, "--url", URL]) == 0
    out = capsys.readouterr().out
    assert f"{DLQ}: 2 dead letter(s)" in out
    assert first in out and second in out and "rejected" in out and "Reject: refused a" in out

    assert main(["dlq", "show", DLQ, second, "--url", URL]) == 0
    out = capsys.readouterr().out
    assert f"id:             {second}" in out and "original group: billing" in out
    assert out.rstrip().endswith("b")

    assert main(["dlq", "replay", DLQ, "--id", first, "--url", URL]) == 0
    assert "replayed 1 dead letter(s); 1 left" in capsys.readouterr().out
    [(replayed, attempt, headers)] = asyncio.run(consume_replayed(1))
    assert (replayed, attempt) == (first, 1) and REPLAYED_AT in headers

    assert main(["dlq", "list", DLQ, "--url", URL, "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and second in lines[0]


def test_replay_needs_all_or_a_filter(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dlq", "replay", DLQ, "--url", URL]) == 2  # returned, not SystemExit
    assert "--all" in capsys.readouterr().err


def test_replay_all_with_progress_and_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    ids = asyncio.run(fill_dead_letters([str(n) for n in range(25)]))
    assert main(["dlq", "replay", DLQ, "--all", "--dry-run", "--url", URL]) == 0
    assert "would replay 25 of 25" in capsys.readouterr().out
    assert main(["dlq", "replay", DLQ, "--all", "--url", URL]) == 0
    captured = capsys.readouterr()
    assert "replayed 25 dead letter(s)" in captured.out
    assert "replaying: 25/25 (100%" in captured.err  # progress lines when not on a terminal
    assert sorted(i for i, _, _ in asyncio.run(consume_replayed(25))) == sorted(ids)


def test_purge_asks_for_yes_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(fill_dead_letters(["x", "y"]))
    assert main(["dlq", "purge", DLQ, "--all", "--url", URL]) == 2
    assert "--yes" in capsys.readouterr().err
    assert main(["dlq", "purge", DLQ, "--key", "k-x", "--yes", "--url", URL]) == 0
    assert "purged 1 dead letter(s); 1 left" in capsys.readouterr().out
    assert main(["dlq", "list", DLQ, "--url", URL]) == 0
    assert f"{DLQ}: 1 dead letter(s)" in capsys.readouterr().out


def test_lag_prints_unconsumed_count(capsys: pytest.CaptureFixture[str]) -> None:
    async def prepare() -> None:
        consumer = Broker(URL)

        @consumer.subscriber("jobs", group="workers")
        async def work(message: Message) -> None:
            raise AssertionError("stopped before anything is published")

        await consumer.start()
        await consumer.stop()
        async with Broker(URL) as producer:
            for _ in range(4):
                await producer.publish("jobs", b"x")

    asyncio.run(prepare())
    assert main(["lag", "jobs", "workers", "--url", URL]) == 0
    count, age = capsys.readouterr().out.splitlines()
    assert count == "4" and age.startswith("age: ") and age.endswith("s")
    assert main(["lag", "jobs", "nobody", "--url", URL]) == 1
    assert "unknown" in capsys.readouterr().out


def test_filtered_replay_progress_ends_at_100_percent(capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(fill_dead_letters([str(n) for n in range(10)]))
    assert main(["dlq", "replay", DLQ, "--key", "k-3", "--url", URL]) == 0
    captured = capsys.readouterr()
    assert "replayed 1 dead letter(s); 9 left" in captured.out
    # the bar counts dead letters examined: it reaches the end (it stopped at 1/10 before)
    assert "replaying, examined: 10/10 (100%" in captured.err, captured.err
    assert main(["dlq", "purge", DLQ, "--all", "--yes", "--url", URL]) == 0
