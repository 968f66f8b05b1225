"""What the conformance cases stand on: the backend description, unique names, collectors."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from ...broker import Broker
from ...url import redact


@dataclass
class Backend:
    """A backend under test.

    - ``url``: the broker URL. For ``memory://`` (no name) every test gets a fresh
      ``memory://conformance-<id>`` so tests never share state.
    - ``options``: extra ``Broker`` options for every broker a test creates.
    - ``restart``: ``async`` callable that stops and starts the broker, keeping its data; cases
      marked ``requires("restart")`` are skipped (with the reason) when it is ``None``.
    - Feature flags are not repeated here: the suite reads the transport's ``Capabilities``
      and the optional ``Supports*`` protocols it implements (see ``features.requires``).
    - ``time_scale``: multiplies every wait deadline (slow CI machines, remote brokers).
    - ``known_defects``: case name (without parameters) -> reason, for defects of the backend
      or of unimq that are known and tracked: the case is marked
      ``xfail(strict=True, reason=...)``, so it still runs, and the day it passes the suite
      fails until the entry is removed.
    """

    url: str
    options: dict[str, Any] = field(default_factory=dict)
    restart: Callable[[], Awaitable[None]] | None = None
    time_scale: float = 1.0
    name: str = ""
    known_defects: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # the URL may hold a password: never show it
        return f"Backend({redact(self.url)!r}, name={self.name!r})"

    def url_for(self, test_id: str) -> str:
        if self.url.rstrip("/") == "memory:":
            return f"memory://conformance-{test_id}"
        return self.url


class Names:
    """Unique topic and group names for one test, so runs on a shared broker never collide."""

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex[:10]

    def topic(self, name: str = "events") -> str:
        return f"conf.{self.id}.{name}"

    def group(self, name: str = "g") -> str:
        return f"conf-{self.id}-{name}"


class Collector:
    """Records what handlers saw and waits, with a deadline, for the expected amount."""

    def __init__(self, time_scale: float = 1.0) -> None:
        self.items: list[Any] = []
        self.times: list[float] = []
        self._changed = asyncio.Event()
        self._scale = time_scale

    def add(self, item: Any) -> None:
        self.items.append(item)
        self.times.append(time.monotonic())
        self._changed.set()

    def __len__(self) -> int:
        return len(self.items)

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Any]:
        """Wait until at least ``count`` items arrived; fail the test with what did arrive."""
        await self._wait_until(
            lambda: len(self.items) >= count,
            timeout,
            lambda limit: (
                f"expected {count} deliveries within {limit:.1f}s, got "
                f"{len(self.items)}: {self.items[:10]!r}"
            ),
        )
        return self.items

    async def wait_for_all(self, expected: set[Any], timeout: float = 10.0) -> list[Any]:
        """Wait until every item of ``expected`` arrived (duplicates do not count twice)."""
        await self._wait_until(
            lambda: expected <= set(self.items),
            timeout,
            lambda limit: (
                f"{len(expected - set(self.items))} of {len(expected)} expected "
                f"deliveries missing after {limit:.1f}s "
                f"(e.g. {sorted(expected - set(self.items))[:3]!r})"
            ),
        )
        return self.items

    async def _wait_until(
        self, done: Callable[[], bool], timeout: float, failure: Callable[[float], str]
    ) -> None:
        limit = timeout * self._scale
        deadline = time.monotonic() + limit
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(failure(limit))
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def settle(self, quiet: float = 0.5, limit: float = 15.0) -> list[Any]:
        """Wait until nothing new arrived for ``quiet`` seconds (to catch extra deliveries).

        Gives up after ``limit`` seconds of continuous arrivals (a runaway redelivery loop),
        returning what arrived so the caller's assertion reports it.
        """
        quiet *= self._scale
        deadline = time.monotonic() + limit * self._scale
        while time.monotonic() < deadline:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), quiet)
            except asyncio.TimeoutError:
                break
        return self.items


class BrokerFactory:
    """Creates brokers for one test and stops every one of them at the end."""

    def __init__(self, backend: Backend, url: str) -> None:
        self.backend = backend
        self.url = url
        self.created: list[Broker] = []

    def __call__(self, **options: Any) -> Broker:
        merged = {**self.backend.options, **options}
        broker = Broker(self.url, **merged)
        self.created.append(broker)
        return broker

    async def close_all(self) -> None:
        for broker in reversed(self.created):
            try:
                await broker.stop(timeout=5)
            except Exception:
                pass


def mark_known_defect(request: pytest.FixtureRequest, backend: Backend) -> None:
    """Mark the running case ``xfail(strict=True)`` when ``backend.known_defects`` lists it."""
    name = getattr(request.node, "originalname", None) or request.node.name
    reason = backend.known_defects.get(name)
    if reason is not None:
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=reason))
