"""The conformance suite: the semantic contract (DESIGN.md section 2) as executable cases.

Every backend runs the same cases. To run them against your own adapter, subclass
:class:`ConformanceSuite` in a test module and give it a ``backend`` fixture::

    import pytest
    from unimq.testing.conformance import Backend, ConformanceSuite

    class TestMyBroker(ConformanceSuite):
        @pytest.fixture
        def backend(self) -> Backend:
            return Backend(url="mybroker://127.0.0.1:1234", restart=my_restart)

or run ``unimq conformance mybroker://127.0.0.1:1234`` (needs ``pip install 'unimq[testing]'``).
Feature flags have one source, the backend's own transport: cases name what they need with
:func:`requires` (``Capabilities`` flags, optional ``Supports*`` protocols, ``"restart"``) and
are skipped, with the reason, without it; where a missing feature must be refused clearly
(``ordered=True`` without ``ordering``), a case checks the refusal instead.

:class:`TransportSuite` is the SPI layer: cases that drive a bare transport, one SPI promise
each, so a broken adapter fails a named SPI method before the semantic cases.
"""

from .features import requires
from .spi import TransportSuite
from .suite import ConformanceSuite
from .support import Backend, BrokerFactory, Collector, Names

__all__ = [
    "Backend",
    "BrokerFactory",
    "Collector",
    "ConformanceSuite",
    "Names",
    "TransportSuite",
    "requires",
]
