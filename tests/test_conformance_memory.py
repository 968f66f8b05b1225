"""The conformance suite against the in-memory backend."""

from __future__ import annotations

import pytest

from unimq.testing.conformance import Backend, ConformanceSuite


class TestMemoryConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self) -> Backend:
        return Backend(url="memory://", name="memory")
