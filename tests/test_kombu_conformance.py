"""The conformance suite on kombu+redis:// (a throwaway redis-server with AOF, so the restart
cases run) and kombu+sqs:// (ElasticMQ). See test_kombu_servers.py for the servers."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from unimq.testing.conformance import Backend, ConformanceSuite

pytest.importorskip("kombu")


def _servers() -> Any:
    name = "unimq_kombu_test_servers_module"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).with_name("test_kombu_servers.py")
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


kombu_servers = _servers()
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
