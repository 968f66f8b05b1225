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
Cases that a backend cannot support by declaration (``ordering=False``, ``broadcast=False``)
check that the feature is refused clearly instead; cases that need a broker restart are
skipped, with the reason, when ``restart`` is ``None``.
"""

from .suite import ConformanceSuite
from .support import Backend, BrokerFactory, Collector, Names

__all__ = ["Backend", "BrokerFactory", "Collector", "ConformanceSuite", "Names"]
