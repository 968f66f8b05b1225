"""How the fixtures start a broker container: a dead container is named as such, with its log,
and a container that dies while starting is started once more in a fresh container.

A CI rehearsal lost two fixtures this way: a RocketMQ container ended while its readiness probe
ran ``docker exec`` in it, and the probe's raw ``409 ... is not running`` came out instead of
"the container exited while starting" and the log. No broker is needed here.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from unimq_brokers import containers
from unimq_brokers.handle import ContainerExited, wait_until


class ProbeOfADeadContainer(Exception):
    """What ``docker exec`` raises once the container has stopped."""


def test_a_probe_failing_because_the_container_died_reports_the_death_and_the_log() -> None:
    def probe() -> bool:
        raise ProbeOfADeadContainer("409 Conflict: container is not running")

    with pytest.raises(ContainerExited, match="exited while starting") as caught:
        wait_until(probe, 5, "rocketmq", alive=lambda: False, on_timeout=lambda: "broker log tail")
    assert "broker log tail" in str(caught.value)
    assert isinstance(caught.value.__cause__, ProbeOfADeadContainer)


def test_a_probe_failing_in_a_live_container_raises_its_own_error() -> None:
    def probe() -> bool:
        raise ProbeOfADeadContainer("something else")

    with pytest.raises(ProbeOfADeadContainer):
        wait_until(probe, 5, "rocketmq", alive=lambda: True)


def test_a_container_that_exits_without_a_probe_error_is_reported_as_exited() -> None:
    with pytest.raises(ContainerExited, match="kafka: the container exited while starting"):
        wait_until(lambda: False, 5, "kafka", interval=0, alive=lambda: False)


class FakeHandle:
    """What ``containers._start`` uses of a :class:`~unimq_brokers.containers.ContainerBroker`."""

    kind = "kafka"

    def __init__(self, outcomes: list[BaseException | None]) -> None:
        self.outcomes = iter(outcomes)
        self.container = self
        self.starts = 0
        self.removals = 0
        self.last_start_seconds: float | None = None

    def start(self) -> None:
        self.starts += 1

    def wait_ready(self) -> None:
        outcome = next(self.outcomes)
        if outcome is not None:
            raise outcome

    def remove(self) -> None:
        self.removals += 1


def start(handle: FakeHandle) -> Any:
    return containers._start(handle)  # type: ignore[arg-type]


def test_a_container_that_dies_while_starting_is_started_once_more() -> None:
    handle = FakeHandle([ContainerExited("kafka: the container exited while starting"), None])
    with pytest.warns(RuntimeWarning, match="starting kafka again in a fresh container"):
        assert start(handle) is handle
    assert (handle.starts, handle.removals) == (2, 1)
    assert handle.last_start_seconds is not None


def test_a_container_that_dies_every_time_fails_the_fixture() -> None:
    deaths: list[BaseException | None] = [
        ContainerExited(f"death {n}") for n in range(containers.START_ATTEMPTS)
    ]
    handle = FakeHandle(deaths)
    with pytest.warns(RuntimeWarning), pytest.raises(ContainerExited, match="death 1"):
        start(handle)
    assert handle.starts == handle.removals == containers.START_ATTEMPTS


@pytest.mark.parametrize("error", [TimeoutError("not ready after 180s"), ValueError("bad probe")])
def test_other_start_failures_are_not_retried(error: BaseException) -> None:
    handle = FakeHandle([error, None])
    with pytest.raises(type(error)):
        start(handle)
    assert (handle.starts, handle.removals) == (1, 1)


def test_the_secure_kafka_heap_holds_the_log_cleaner_buffer() -> None:
    """The secure broker (then -Xmx256m) died of OutOfMemoryError allocating the log cleaner's
    default 128 MiB buffer at start-up; its heap now leaves 256 MiB beside that buffer."""
    from unimq_brokers.secure_kafka import secure_kafka_env
    from unimq_brokers.server_tls import make_server_tls

    env = secure_kafka_env(9092, "local", make_server_tls(("127.0.0.1",)))
    assert "KAFKA_LOG_CLEANER_DEDUPE_BUFFER_SIZE" not in env  # the default, 128 MiB
    max_heap = re.search(r"-Xmx(\d+)m", env["KAFKA_HEAP_OPTS"])
    assert max_heap is not None
    assert int(max_heap.group(1)) >= 128 + 256


def test_a_kafka_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rehearsal lost the Kafka cluster fixture to ``kafka-storage format -t -...``: an id
    starting with ``-`` reads as an option. The first drawn UUID here encodes to one."""
    import uuid

    from unimq_brokers import cluster_kafka

    dash_first = uuid.UUID(bytes=b"\xf8" + bytes(15))
    drawn = iter([dash_first, uuid.UUID(int=1)])
    monkeypatch.setattr(cluster_kafka.uuid, "uuid4", lambda: next(drawn))
    assert cluster_kafka.base64.urlsafe_b64encode(dash_first.bytes).startswith(b"-")
    cluster_id = cluster_kafka._cluster_id()
    assert not cluster_id.startswith("-")
    assert len(cluster_id) == 22
