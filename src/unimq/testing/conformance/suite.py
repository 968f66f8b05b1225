"""``ConformanceSuite``: all case groups plus the fixtures they share."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from ...broker import Broker
from .cases_batches import BatchCases
from .cases_delay import DelayCases
from .cases_delivery import DeliveryCases
from .cases_groups import GroupCases
from .cases_idempotency import IdempotencyCases
from .cases_operations import OperationsCases
from .cases_ordering import OrderingCases
from .cases_request import RequestCases
from .cases_restart import RestartCases
from .cases_retry import RetryCases
from .cases_shutdown import ShutdownCases
from .cases_transactions import TransactionCases
from .features import missing
from .support import Backend, BrokerFactory, Collector, Names, mark_known_defect


@pytest.mark.asyncio
class ConformanceSuite(
    DeliveryCases,
    GroupCases,
    RetryCases,
    DelayCases,
    OrderingCases,
    IdempotencyCases,
    ShutdownCases,
    RestartCases,
    OperationsCases,
    RequestCases,
    BatchCases,
    TransactionCases,
):
    """Subclass and provide a ``backend`` fixture returning a :class:`Backend`."""

    @pytest.fixture
    def backend(self) -> Backend:
        raise NotImplementedError("override the 'backend' fixture to return a Backend")

    @pytest.fixture(autouse=True)
    def requirements(self, request: pytest.FixtureRequest, backend: Backend, names: Names) -> None:
        """Skip a case whose ``requires(...)`` the backend lacks; mark its known defects."""
        mark_known_defect(request, backend)
        probe = Broker(backend.url_for(names.id), **backend.options)  # never connected
        reason = missing(
            request.node, probe.transport, restart=backend.restart, scheme=probe.url.scheme
        )
        if reason is not None:
            pytest.skip(reason)

    @pytest.fixture
    def names(self) -> Names:
        return Names()

    @pytest_asyncio.fixture
    async def brokers(self, backend: Backend, names: Names) -> AsyncIterator[BrokerFactory]:
        factory = BrokerFactory(backend, backend.url_for(names.id))
        yield factory
        await factory.close_all()

    @pytest.fixture
    def collector(self, backend: Backend) -> Callable[[], Collector]:
        return lambda: Collector(backend.time_scale)
