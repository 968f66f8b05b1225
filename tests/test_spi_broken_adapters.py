"""The SPI layer names the broken method: deliberately broken variants of the toy adapter
fail exactly the SPI case for the promise they break (and pass the others that ran)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

MODULE = """
import pytest
from unimq.hookspecs import hookimpl
from unimq.plugins import register_plugin
from unimq.testing.conformance import Backend, TransportSuite
from unimq_toy.transport import ToySubscription, ToyTransport


class NoGiveBack(ToySubscription):
    async def close(self):  # forgets unacked deliveries
        self._stopped.set()
        self.unacked.clear()
        self._on_close()


class NoWake(ToySubscription):
    async def stop(self):  # never wakes waiting receivers
        pass


class Broken(ToyTransport):
    async def subscribe(self, spec):
        subscription = await super().subscribe(spec)
        kind = {"no-give-back": NoGiveBack, "no-wake": NoWake}.get(self.flaw)
        if kind is not None:
            subscription.__class__ = kind
        return subscription

    async def publish(self, message):
        if self.flaw == "ascii-headers":
            message.headers = {
                k: v.encode("ascii", "replace").decode() for k, v in message.headers.items()
            }
        await super().publish(message)


def factory(url, options, context):
    transport = Broken(url, options, context)
    transport.flaw = url.host
    return transport


class Plugin:
    @hookimpl
    def unimq_register_transports(self, registry):
        registry.add("broken", factory, "a broken toy (tests)")


register_plugin(Plugin(), name="broken-toy")


class TestBrokenSPI(TransportSuite):
    @pytest.fixture
    def backend(self):
        return Backend(url="broken://FLAW", name="broken toy", time_scale=0.2)
"""

CASES = [
    "test_spi_close_gives_unacked_deliveries_back",
    "test_spi_stop_wakes_waiting_receivers_with_none",
    "test_spi_publish_round_trips_body_key_and_headers",
]


@pytest.mark.parametrize(
    ("flaw", "fails"),
    [
        ("no-give-back", "test_spi_close_gives_unacked_deliveries_back"),
        ("no-wake", "test_spi_stop_wakes_waiting_receivers_with_none"),
        ("ascii-headers", "test_spi_publish_round_trips_body_key_and_headers"),
    ],
)
def test_a_broken_adapter_fails_the_named_spi_case(tmp_path: Path, flaw: str, fails: str) -> None:
    module = tmp_path / "test_broken_toy.py"
    module.write_text(textwrap.dedent(MODULE).replace("FLAW", flaw))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(module),
            "-q",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            "-o",
            "asyncio_mode=auto",
            "--rootdir",
            str(tmp_path),
            "-k",
            " or ".join(CASES),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    failed = {
        line.split("::")[-1].split(" ")[0]
        for line in result.stdout.splitlines()
        if line.startswith("FAILED")
    }
    assert failed == {fails}, result.stdout[-3000:]
    assert "2 passed" in result.stdout, result.stdout[-3000:]
