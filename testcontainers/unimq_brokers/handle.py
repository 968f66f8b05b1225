"""Broker handles: what a test gets from the ``*_broker`` fixtures."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit


class BrokerUnavailable(Exception):
    """Docker, the image or the external broker URL is not available.

    The pytest fixtures turn this into a skip (or a failure when ``CI=true``).
    """


class BrokerControlUnsupported(Exception):
    """The operation (restart, topic creation, ...) is impossible for this handle,
    e.g. for an external broker."""


class BrokerHandle:
    """A running broker reachable from the host.

    Attributes:
        kind: ``"rabbitmq"``, ``"kafka"`` or ``"rocketmq"``.
        url: the connection URL for unimq (``amqp://guest:guest@127.0.0.1:P/``,
            ``kafka://127.0.0.1:P``, ``rocketmq://127.0.0.1:P``).
        host, port: where the client connects (always 127.0.0.1 for containers).
        mode: ``"container"`` or ``"external"``.
        image, flavor: the container image and ``"local"`` (built by
            build-images.sh) or ``"official"``; ``None`` for external brokers.
        version: the broker version the handle was asked for (versions.env); ``None`` for
            external brokers, whose version the tests cannot know.
    """

    def __init__(
        self,
        kind: str,
        url: str,
        *,
        mode: str,
        image: str | None = None,
        flavor: str | None = None,
        version: str | None = None,
    ) -> None:
        self.kind = kind
        self.version = version
        self.url = url
        self.mode = mode
        self.image = image
        self.flavor = flavor
        parts = urlsplit(url)
        self.host: str = parts.hostname or "127.0.0.1"
        self.port: int = parts.port or 0

    # -- addresses in the form each raw client wants ------------------------
    @property
    def address(self) -> str:
        """``host:port``: Kafka bootstrap servers / RocketMQ proxy endpoint."""
        return f"{self.host}:{self.port}"

    @property
    def bootstrap_servers(self) -> str:
        return self.address

    @property
    def endpoint(self) -> str:
        return self.address

    @property
    def amqp_url(self) -> str:
        return self.url

    # -- lifecycle (containers only) ----------------------------------------
    @property
    def can_control(self) -> bool:
        """True when stop/start/restart/kill work (container mode)."""
        return False

    def stop(self, timeout: int = 30) -> None:
        raise BrokerControlUnsupported(
            f"{self.kind} broker in {self.mode} mode cannot be stopped by the tests"
        )

    def start(self, wait: bool = True) -> None:
        raise BrokerControlUnsupported(
            f"{self.kind} broker in {self.mode} mode cannot be started by the tests"
        )

    def kill(self) -> None:
        raise BrokerControlUnsupported(
            f"{self.kind} broker in {self.mode} mode cannot be killed by the tests"
        )

    def restart(self, timeout: int = 30) -> None:
        """Graceful stop then start, same host port(s) and data; waits until ready."""
        self.stop(timeout=timeout)
        self.start(wait=True)

    def wait_ready(self, timeout: float | None = None) -> None:
        return None

    def logs(self, tail: int = 200) -> str:
        return ""

    def __repr__(self) -> str:
        extra = f" image={self.image} ({self.flavor})" if self.image else ""
        if self.version:
            extra += f" version={self.version}"
        return f"<{type(self).__name__} {self.kind} {self.url} mode={self.mode}{extra}>"


class ExternalBroker(BrokerHandle):
    def __init__(self, kind: str, url: str, mqadmin: Sequence[str] | None = None) -> None:
        super().__init__(kind, url, mode="external")
        self._mqadmin = list(mqadmin) if mqadmin else None

    def mqadmin(self, *args: str, timeout: float = 120) -> str:
        if not self._mqadmin:
            raise BrokerControlUnsupported(
                "external RocketMQ: set UNIMQ_TEST_ROCKETMQ_MQADMIN to a command that runs mqadmin"
            )
        proc = subprocess.run(
            [*self._mqadmin, *args], capture_output=True, text=True, timeout=timeout
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"mqadmin {' '.join(args)} failed ({proc.returncode}): {proc.stdout}{proc.stderr}"
            )
        return proc.stdout


class ContainerExited(RuntimeError):
    """The broker's container stopped before it was ready (the message carries its log tail)."""


def _exited(what: str, on_timeout: Callable[[], str] | None) -> ContainerExited:
    extra = on_timeout() if on_timeout else ""
    return ContainerExited(f"{what}: the container exited while starting\n{extra}")


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.5,
    on_timeout: Callable[[], str] | None = None,
    alive: Callable[[], bool] | None = None,
) -> float:
    """Poll ``check`` until true; return the seconds waited or raise TimeoutError."""
    t0 = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - t0
        except Exception as exc:
            # A probe that runs inside the container (``docker exec``) fails with docker's raw
            # "409 ... is not running" once the container has died: report the death, with the
            # container's log, instead of the probe's traceback.
            if alive is not None and not alive():
                raise _exited(what, on_timeout) from exc
            raise
        if alive is not None and not alive():
            raise _exited(what, on_timeout)
        if time.monotonic() - t0 > timeout:
            extra = on_timeout() if on_timeout else ""
            raise TimeoutError(f"{what}: not ready after {timeout:.0f}s\n{extra}")
        time.sleep(interval)
