"""The conformance suite against the in-memory backend."""

from __future__ import annotations

import pytest

from unimq.testing.conformance import Backend, ConformanceSuite, TransportSuite

#: Known defects (case -> reason): strict xfails, removed when fixed. None today: the two
#: ordering cases added for issue 12 pass since pipeline v2.
KNOWN_DEFECTS: dict[str, str] = {}


class TestMemoryConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self) -> Backend:
        return Backend(url="memory://", name="memory", known_defects=KNOWN_DEFECTS)


class TestMemorySPI(TransportSuite):
    @pytest.fixture
    def backend(self) -> Backend:
        return Backend(url="memory://", name="memory")
