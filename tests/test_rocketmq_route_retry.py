"""RocketMQ route lookups are asked again after a failure (no broker needed): the client raises
"failed to fetch topic route" for any failed query, a timed-out one included, and a publish
to an existing topic failed on one such answer in a CI run."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("rocketmq")

from unimq_rocketmq import transport


class FlakyLookup:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self, topic: str) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise Exception(f"failed to fetch topic:{topic} route.")
        return f"route of {topic}"


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "ROUTE_RETRY_PAUSES", (0.0, 0.0, 0.0))


@pytest.mark.parametrize("failures", [0, 1, 3])
async def test_a_lookup_that_fails_a_few_times_is_asked_again(failures: int) -> None:
    lookup = FlakyLookup(failures)
    assert await transport.route_with_retries(lookup, "orders") == "route of orders"
    assert lookup.calls == failures + 1


async def test_a_lookup_that_keeps_failing_raises_the_clients_error() -> None:
    lookup = FlakyLookup(failures=100)
    with pytest.raises(Exception, match="failed to fetch topic:orders route"):
        await transport.route_with_retries(lookup, "orders")
    assert lookup.calls == len(transport.ROUTE_RETRY_PAUSES) + 1
