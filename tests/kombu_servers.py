"""Real servers for the kombu tests: a redis-server with AOF (so it can restart with its
data) and ElasticMQ, an SQS-compatible server run from its Maven Central jars on 127.0.0.1.

The fixtures are session-scoped and named ``<kind>_<variant>_server``, so the test-tier
plugin (scripts/pytest_plugins) files these tests under the ``store`` tier and ``--quick``
leaves them out. The kombu test modules import this one (``from . import kombu_servers``) and
re-export the fixtures they use. A server that cannot start skips the tests
with the reason, except under ``CI=true``, where that is a failure: CI must run them.
``scripts/install-stores.sh`` installs redis-server; ElasticMQ needs Java 17 and Maven
(``UNIMQ_ELASTICMQ_CLASSPATH`` may name a ready classpath instead).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kombu")

_SERVERS = Path(__file__).parent / "contrib" / "servers.py"
_spec = importlib.util.spec_from_file_location("unimq_kombu_test_servers", _SERVERS)
assert _spec is not None and _spec.loader is not None
servers: Any = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = servers
_spec.loader.exec_module(servers)

ELASTICMQ_VERSION = "1.6.11"
ELASTICMQ_POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
<groupId>unimq.test</groupId><artifactId>elasticmq-runner</artifactId><version>1</version>
<dependencies><dependency><groupId>org.elasticmq</groupId>
<artifactId>elasticmq-server_2.13</artifactId><version>{ELASTICMQ_VERSION}</version>
</dependency></dependencies></project>
"""


class RedisAof:
    """A redis-server that persists every write (AOF, fsync always), so it can restart."""

    def __init__(self) -> None:
        binary = os.environ.get("UNIMQ_REDIS_SERVER") or shutil.which("redis-server")
        if binary is None and os.path.exists("/usr/bin/redis-server"):
            binary = "/usr/bin/redis-server"
        if binary is None:
            raise servers.ServerUnavailable(
                "redis-server is not installed (scripts/install-stores.sh)"
            )
        self.binary = binary
        self.directory = Path(tempfile.mkdtemp(prefix="unimq-kombu-redis-"))
        self.port = servers.free_port()
        self.password = servers.REDIS_PASSWORD
        self.process: subprocess.Popen[Any] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"kombu+redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            self.binary, "--bind", "127.0.0.1", "--port", str(self.port),
            "--requirepass", self.password, "--dir", str(self.directory),
            "--save", "", "--appendonly", "yes", "--appendfsync", "always",
            "--daemonize", "no", "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 20
        while not _answers(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def restart(self) -> None:
        assert self.process is not None
        servers._stop(self.process, signal.SIGTERM, 15)
        self.start()

    def stop(self) -> None:
        if self.process is not None:
            servers._stop(self.process, signal.SIGTERM, 15)
        shutil.rmtree(self.directory, ignore_errors=True)


def _answers(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def elasticmq_classpath() -> str:
    given = os.environ.get("UNIMQ_ELASTICMQ_CLASSPATH")
    if given:
        return given
    mvn = shutil.which("mvn")
    if mvn is None or shutil.which("java") is None:
        raise servers.ServerUnavailable("ElasticMQ needs java and mvn (Java 17, Maven)")
    work = Path(tempfile.mkdtemp(prefix="unimq-elasticmq-pom-"))
    (work / "pom.xml").write_text(ELASTICMQ_POM)
    output = work / "cp.txt"
    result = subprocess.run(
        [mvn, "-q", "-B", "dependency:build-classpath", f"-Dmdep.outputFile={output}"],
        cwd=work, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if result.returncode != 0 or not output.exists():
        raise servers.ServerUnavailable(
            f"cannot resolve ElasticMQ with Maven: {result.stdout[-500:]}"
        )
    return output.read_text().strip()


class ElasticMQ:
    def __init__(self) -> None:
        classpath = elasticmq_classpath()
        self.port = servers.free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="unimq-elasticmq-"))
        config = self.directory / "elasticmq.conf"
        config.write_text(
            'include classpath("application.conf")\n'
            f"node-address {{ protocol = http, host = 127.0.0.1, port = {self.port}, "
            'context-path = "" }\n'
            f'rest-sqs {{ enabled = true, bind-port = {self.port}, bind-hostname = "127.0.0.1", '
            "sqs-limits = strict }\n"
            "rest-stats { enabled = false }\n"
        )
        java = shutil.which("java") or "java"
        log = self.directory / "elasticmq.log"
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [java, "-Xmx160m", "-Xss512k", "-XX:+UseSerialGC", f"-Dconfig.file={config}",
                 "-cp", classpath, "org.elasticmq.server.Main"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 90
        while "started in" not in log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"ElasticMQ did not start:\n{servers._tail(log)}")
            time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"kombu+sqs://unimq:elasticmq-s3cret@127.0.0.1:{self.port}"

    def stop(self) -> None:
        servers._stop(self.process, signal.SIGTERM, 15)
        shutil.rmtree(self.directory, ignore_errors=True)


NEEDED_BY = "the kombu real-server tests"


@pytest.fixture(scope="session")
def kombu_redis_server() -> Iterator[RedisAof]:
    yield from servers.serve(
        RedisAof, needed_by=NEEDED_BY, unavailable_on=(servers.ServerUnavailable, RuntimeError)
    )


@pytest.fixture(scope="session")
def kombu_sqs_server() -> Iterator[ElasticMQ]:
    yield from servers.serve(
        ElasticMQ,
        needed_by=NEEDED_BY,
        unavailable_on=(
            servers.ServerUnavailable,
            RuntimeError,
            OSError,
            subprocess.SubprocessError,
        ),
    )
