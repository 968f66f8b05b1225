"""The test module ``unimq conformance URL`` runs: the whole suite against the URL it is given.

No flags are written here: the suite reads what the backend offers from its transport
(``Capabilities`` and the ``Supports*`` protocols, see :mod:`.features`). The URL travels in
``UNIMQ_CONFORMANCE_URL``, never in a file, since it may hold a password.
"""

from __future__ import annotations

import os

import pytest

from .spi import TransportSuite
from .suite import ConformanceSuite
from .support import Backend


def _backend() -> Backend:
    return Backend(url=os.environ["UNIMQ_CONFORMANCE_URL"], name="cli")


class TestConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self) -> Backend:
        return _backend()


class TestTransportSPI(TransportSuite):
    @pytest.fixture
    def backend(self) -> Backend:
        return _backend()
