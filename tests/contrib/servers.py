"""Real Redis and PostgreSQL servers for the contrib tests, started from the Debian packages.

Each server runs from a fresh temporary directory, listens on 127.0.0.1 only, on a free port,
and is stopped (and its directory removed) at the end of the session. PostgreSQL refuses to
run as root: when the tests run as root, its processes run as the ``postgres`` OS user.

``scripts/install-stores.sh`` installs the packages (``redis-server``, ``postgresql``).
``UNIMQ_REDIS_SERVER`` (the redis-server binary) and ``UNIMQ_PG_BIN`` (PostgreSQL's bin
directory) point at other installations.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

REDIS_PASSWORD = "r3dis-s3cret"
PG_USER = "unimq"
PG_PASSWORD = "pg-s3cret"
PG_DATABASE = "unimq_test"


class ServerUnavailable(Exception):
    """The server's binaries are missing (the caller skips, or fails under CI=true)."""


class Stoppable(Protocol):
    def stop(self) -> None: ...


S = TypeVar("S", bound=Stoppable)


def unavailable(reason: str, needed_by: str) -> None:
    """Skip with ``reason``, except under ``CI=true``, where a test server that cannot start is
    a failure: CI must run the tests that need it."""
    import pytest

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: {needed_by} must run)", pytrace=False)
    pytest.skip(reason)


def serve(
    start: Callable[[], S],
    *,
    needed_by: str,
    unavailable_on: tuple[type[BaseException], ...] = (ServerUnavailable,),
) -> Iterator[S]:
    """The body of a session fixture of one server: start it (a failure listed in
    ``unavailable_on`` is :func:`unavailable`), yield it, stop it at the end."""
    try:
        server = start()
    except unavailable_on as exc:
        unavailable(str(exc), needed_by)
        raise AssertionError("unreachable") from None
    try:
        yield server
    finally:
        server.stop()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen[Any], sig: int, timeout: float = 20.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@dataclass
class RedisServer:
    port: int
    password: str
    directory: Path
    process: subprocess.Popen[Any] = field(repr=False)

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def url_for_db(self, db: int) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{db}"

    @classmethod
    def start(cls) -> RedisServer:
        binary = os.environ.get("UNIMQ_REDIS_SERVER") or shutil.which("redis-server")
        if binary is None and os.path.exists("/usr/bin/redis-server"):
            binary = "/usr/bin/redis-server"
        if binary is None or not os.path.exists(binary):
            raise ServerUnavailable(
                "redis-server is not installed (bash scripts/install-stores.sh installs it)"
            )
        directory = Path(tempfile.mkdtemp(prefix="unimq-redis-"))
        port = free_port()
        log = directory / "redis.log"
        args = [
            binary,
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--requirepass", REDIS_PASSWORD,
            "--dir", str(directory),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", str(log),
        ]  # fmt: skip
        process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        server = cls(port, REDIS_PASSWORD, directory, process)
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                shutil.rmtree(directory, ignore_errors=True)
                raise RuntimeError(f"redis-server exited with {process.returncode}:\n{_tail(log)}")
            if server._ping():
                return server
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"redis-server did not answer within 20 s:\n{_tail(log)}")
            time.sleep(0.05)

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                reply = b""
                while b"PONG" not in reply and len(reply) < 200:
                    chunk = sock.recv(200)
                    if not chunk:
                        break
                    reply += chunk
                return b"+PONG" in reply
        except OSError:
            return False

    def stop(self) -> None:
        _stop(self.process, signal.SIGTERM)
        shutil.rmtree(self.directory, ignore_errors=True)


def _postgres_bin_dir() -> Path | None:
    configured = os.environ.get("UNIMQ_PG_BIN")
    if configured:
        return Path(configured)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0,
    )
    return Path(candidates[-1]).parent if candidates else None


@dataclass
class PostgresServer:
    port: int
    directory: Path
    process: subprocess.Popen[Any] = field(repr=False)
    user: str = PG_USER
    password: str = PG_PASSWORD
    database: str = PG_DATABASE

    @property
    def async_url(self) -> str:
        return (
            f"postgresql+psycopg://{self.user}:{self.password}@127.0.0.1:{self.port}/"
            f"{self.database}"
        )

    @property
    def url(self) -> str:
        """The plain ``postgresql://`` spelling (psycopg 3 for both sync and async engines)."""
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    @classmethod
    def start(cls) -> PostgresServer:
        bin_dir = _postgres_bin_dir()
        if bin_dir is None or not (bin_dir / "postgres").exists():
            raise ServerUnavailable(
                "PostgreSQL is not installed (no initdb/postgres; bash scripts/install-stores.sh "
                "installs it, or set UNIMQ_PG_BIN to its bin directory)"
            )
        run_as: dict[str, Any] = {}
        directory = Path(tempfile.mkdtemp(prefix="unimq-pg-"))
        if os.geteuid() == 0:  # postgres refuses to run as root
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(directory, ignore_errors=True)
                raise ServerUnavailable(
                    "running as root and there is no 'postgres' OS user to run PostgreSQL as"
                ) from None
            os.chown(directory, account.pw_uid, account.pw_gid)
            run_as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        data = directory / "data"
        sockets = directory / "sockets"
        log = directory / "postgres.log"
        pwfile = directory / "pwfile"
        pwfile.write_text(PG_PASSWORD + "\n")
        if run_as:
            os.chown(pwfile, run_as["user"], run_as["group"])
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        initdb = [
            str(bin_dir / "initdb"),
            "-D", str(data),
            "-U", PG_USER,
            "--pwfile", str(pwfile),
            "--auth-local", "trust",
            "--auth-host", "scram-sha-256",
            "-E", "UTF8",
            "--no-sync",
        ]  # fmt: skip
        init = subprocess.run(
            initdb,
            cwd=directory,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            **run_as,
        )
        if init.returncode != 0:
            shutil.rmtree(directory, ignore_errors=True)
            raise RuntimeError(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")
        sockets.mkdir()
        if run_as:
            os.chown(sockets, run_as["user"], run_as["group"])
        port = free_port()
        postgres = [
            str(bin_dir / "postgres"),
            "-D", str(data),
            "-p", str(port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={sockets}",
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
            "-c", "max_connections=100",
        ]  # fmt: skip
        with open(log, "wb") as out:
            process = subprocess.Popen(
                postgres,
                cwd=directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                **run_as,
            )
        server = cls(port, directory, process)
        try:
            server._wait_ready(log)
            server._create_database()
        except BaseException:
            server.stop()
            raise
        return server

    def _connect(self, dbname: str) -> Any:
        import psycopg

        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=dbname,
            autocommit=True,
            connect_timeout=2,
        )

    def _wait_ready(self, log: Path) -> None:
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}:\n{_tail(log)}")
            try:
                self._connect("postgres").close()
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"postgres did not accept connections within 30 s ({exc}):\n{_tail(log)}"
                    ) from None
            time.sleep(0.1)

    def _create_database(self) -> None:
        with self._connect("postgres") as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')

    def stop(self) -> None:
        _stop(self.process, signal.SIGINT)  # "fast" shutdown
        shutil.rmtree(self.directory, ignore_errors=True)
