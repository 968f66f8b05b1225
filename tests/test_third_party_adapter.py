"""A third-party adapter, installed as its own distribution, runs the conformance suite.

``tests/toy_transport`` is a separate package (``unimq-toy-transport``) that registers
``toy://`` through the ``unimq`` entry-point group; the test command installs it. Nothing in
unimq knows about it.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

from unimq.plugins import transport_registry
from unimq.testing.conformance import Backend, ConformanceSuite, TransportSuite


def test_toy_adapter_is_discovered_through_the_entry_point_group() -> None:
    names = {entry.name for entry in entry_points(group="unimq")}
    assert "toy" in names, (
        "the toy adapter is not installed: pip install ./tests/toy_transport "
        "(scripts/test.sh does this)"
    )
    assert "toy" in transport_registry().schemes()


class TestToyAdapterConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self) -> Backend:
        return Backend(url="toy://conformance", name="toy (third-party)")


class TestToyAdapterSPI(TransportSuite):
    @pytest.fixture
    def backend(self) -> Backend:
        return Backend(url="toy://spi", name="toy (third-party)")
