"""The conformance suite on kombu+redis:// (a throwaway redis-server with AOF, so the restart
cases run) and kombu+sqs:// (ElasticMQ). See kombu_servers.py for the servers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from unimq.testing.conformance import Backend, ConformanceSuite

pytest.importorskip("kombu")


from . import kombu_servers

kombu_redis_server = kombu_servers.kombu_redis_server
kombu_sqs_server = kombu_servers.kombu_sqs_server


class TestKombuRedisConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self, kombu_redis_server: Any) -> Backend:
        async def restart() -> None:
            await asyncio.to_thread(kombu_redis_server.restart)

        return Backend(
            url=kombu_redis_server.url,
            restart=restart,
            name="kombu+redis",
            time_scale=2.0,
        )


class TestKombuSQSConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self, kombu_sqs_server: Any) -> Backend:
        return Backend(
            url=kombu_sqs_server.url,
            # connect_timeout: ElasticMQ (a JVM on a small heap) answers the four publishing
            # connections' first requests slowly while a 2-core CI machine runs other suites.
            options={"secure": "false", "connect_timeout": 30},
            name="kombu+sqs",
            # 3: a CI run at load average ~40 once saw no delivery within the 2x deadline
            # (20 s) of a case that takes 6 s on a quiet machine and 14 s beside six busy loops
            time_scale=3.0,
        )
