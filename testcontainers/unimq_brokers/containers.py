"""Start the brokers as containers with the ``testcontainers`` library.

Every port is published on 127.0.0.1 only, on a host port picked before the
container is created, so that

* stop/start keeps the same host port (Docker re-binds the same number), and
* brokers that tell clients where to connect (Kafka's advertised listener,
  RocketMQ's proxy route answers) can be told that exact host port.
"""

from __future__ import annotations

import os
import time
import uuid
import warnings
from collections.abc import Callable

import docker
from docker.errors import DockerException, ImageNotFound, NotFound
from testcontainers.core.container import DockerContainer

from . import config, probes
from .handle import BrokerHandle, BrokerUnavailable, ContainerExited, wait_until
from .rocketmq_admin import RocketMQAdmin

FIXTURE_LABEL = "org.unimq.test.fixture"
PID_LABEL = "org.unimq.test.pid"
LOOPBACK = "127.0.0.1"


class LoopbackContainer(DockerContainer):
    """DockerContainer whose published ports bind to 127.0.0.1 only."""

    def with_loopback_port(self, container_port: int, host_port: int) -> LoopbackContainer:
        # docker-py accepts (host_ip, host_port); testcontainers' with_bind_ports
        # only takes a port number (which would bind 0.0.0.0).
        self.ports[f"{container_port}/tcp"] = (LOOPBACK, host_port)  # type: ignore[assignment]
        return self


class ContainerBroker(BrokerHandle):
    """A broker in a container started by the fixtures (restartable)."""

    def __init__(
        self,
        kind: str,
        url: str,
        *,
        image: str,
        flavor: str,
        container: LoopbackContainer,
        ready: Callable[[ContainerBroker], bool],
        start_timeout: float,
        version: str | None = None,
    ) -> None:
        super().__init__(kind, url, mode="container", image=image, flavor=flavor, version=version)
        self.container = container
        self._ready = ready
        self.start_timeout = start_timeout
        #: seconds the last (re)start took until ready
        self.last_start_seconds: float | None = None

    # -- docker plumbing -----------------------------------------------------
    @property
    def _wrapped(self):
        return self.container.get_wrapped_container()

    @property
    def container_id(self) -> str:
        return self._wrapped.id

    @property
    def container_name(self) -> str:
        return self._wrapped.name

    def status(self) -> str:
        w = self._wrapped
        w.reload()
        return w.status

    def _running(self) -> bool:
        try:
            return self.status() in {"running", "created", "restarting"}
        except NotFound:
            return False

    def exec(
        self, cmd: list[str], timeout: float | None = None, env: dict[str, str] | None = None
    ) -> tuple[int, str, str]:
        """Run ``cmd`` in the container; return (exit code, stdout, stderr)."""
        res = self._wrapped.exec_run(cmd, demux=True, environment=env)
        out, err = res.output if isinstance(res.output, tuple) else (res.output, b"")
        return (
            res.exit_code,
            (out or b"").decode(errors="replace"),
            (err or b"").decode(errors="replace"),
        )

    def logs(self, tail: int = 200) -> str:
        try:
            return self._wrapped.logs(tail=tail).decode(errors="replace")
        except DockerException as e:  # pragma: no cover - diagnostics only
            return f"<no logs: {e}>"

    def memory_usage(self) -> int | None:
        """Current memory usage of the container in bytes (as ``docker stats`` reports it)."""
        try:
            st = self._wrapped.stats(stream=False)
            mem = st.get("memory_stats", {})
            usage = mem.get("usage")
            cache = (
                (mem.get("stats") or {}).get("cache")
                or (mem.get("stats") or {}).get("inactive_file")
                or 0
            )
            return int(usage - cache) if usage is not None else None
        except DockerException:
            return None

    # -- lifecycle -------------------------------------------------------------
    @property
    def can_control(self) -> bool:
        return True

    def wait_ready(self, timeout: float | None = None) -> None:
        t = self.start_timeout if timeout is None else timeout
        self.last_start_seconds = wait_until(
            lambda: self._ready(self),
            t,
            f"{self.kind} ({self.image})",
            on_timeout=lambda: "--- container log tail ---\n" + self.logs(80),
            alive=self._running,
        )

    def stop(self, timeout: int = 30) -> None:
        """Graceful stop (SIGTERM, then SIGKILL after ``timeout`` s); data is kept."""
        self._wrapped.stop(timeout=timeout)

    def kill(self) -> None:
        """Hard stop (SIGKILL) for crash tests; data written to the page cache survives."""
        self._wrapped.kill()
        wait_until(lambda: not self._running(), 30, f"{self.kind} kill")

    def start(self, wait: bool = True) -> None:
        """Start the stopped container again (same host ports, same data)."""
        t0 = time.monotonic()
        self._wrapped.start()
        if wait:
            self.wait_ready()
            self.last_start_seconds = time.monotonic() - t0

    def remove(self) -> None:
        try:
            self.container.stop(force=True, delete_volume=True)
        except (DockerException, AttributeError):
            pass


class RocketMQContainerBroker(RocketMQAdmin, ContainerBroker):
    """RocketMQ container; adds mqadmin-based topic/group helpers.

    ``namesrv_address`` / ``broker_address`` (``127.0.0.1:PORT``) reach the name server and the
    broker's remoting (admin) port from the host, for provisioners that speak the remoting
    protocol themselves (``unimq_rocketmq.provision``): much faster than a JVM per mqadmin call.
    """

    namesrv_address: str | None = None
    broker_address: str | None = None

    def mqadmin(self, *args: str, timeout: float = 120) -> str:
        if self.flavor == "local":
            cmd = ["mqadmin", *args]
        else:
            # official apache/rocketmq image: $ROCKETMQ_HOME/bin/mqadmin
            cmd = [
                "sh",
                "-c",
                'exec sh "$ROCKETMQ_HOME/bin/mqadmin" "$@"',
                "mqadmin",
                *args,
                "-n",
                "127.0.0.1:9876",
            ]
        code, out, err = self.exec(cmd)
        if code != 0:
            raise RuntimeError(f"mqadmin {' '.join(args)} failed (exit {code}):\n{out}\n{err}")
        return out


# ---------------------------------------------------------------------------
# starting


def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=60)
        client.ping()
        return client
    except Exception as e:  # DockerException, connection errors, missing socket...
        raise BrokerUnavailable(
            f"Docker engine not reachable ({type(e).__name__}: {e}). "
            "Install and start it with `bash testcontainers/prepare-machine.sh`, or run against "
            "external brokers (UNIMQ_TEST_BROKERS=external)."
        ) from None


def ensure_image(
    client: docker.DockerClient, image: str, source: str, kind: str, version: str
) -> str:
    """Make sure ``image`` is present (pulling official images); return its flavor.

    A locally built image records its broker version in a label; it must be ``version``, so a
    stale ``.images.env`` can never run one version's tests on another version's broker.
    """
    try:
        img = client.images.get(image)
    except ImageNotFound:
        if image.startswith("unimq-test/"):
            raise BrokerUnavailable(
                f"image {image} (from {source}) is not built here; run `bash testcontainers/build-images.sh`"
            ) from None
        try:
            img = client.images.pull(image)
        except Exception as e:
            raise BrokerUnavailable(
                f"image {image} (from {source}) is not present and cannot be pulled ({type(e).__name__}: {e}); "
                "build local images with `bash testcontainers/prepare-machine.sh` and use testcontainers/.images.env"
            ) from None
    labels = (img.attrs.get("Config") or {}).get("Labels") or {}
    if labels.get(config.LOCAL_IMAGE_LABEL) != "local":
        return "official"
    built = labels.get(f"org.unimq.test.{kind}.version")
    if built != version:
        raise BrokerUnavailable(
            f"image {image} (from {source}) is {kind} {built}, not {version} as "
            "testcontainers/images/versions.env lists; run `bash testcontainers/build-images.sh`"
        )
    return "local"


def remove_orphans(client: docker.DockerClient) -> None:
    """Remove fixture containers left behind by test processes that no longer exist."""
    try:
        for c in client.containers.list(all=True, filters={"label": FIXTURE_LABEL}):
            pid = c.labels.get(PID_LABEL)
            try:
                alive = pid is not None and int(pid) > 0 and (os.kill(int(pid), 0) is None)
            except (OSError, ValueError):
                alive = False
            if not alive:
                c.remove(force=True, v=True)
    except DockerException:
        pass


def _new_container(kind: str, image: str) -> LoopbackContainer:
    c = LoopbackContainer(image)
    c.with_name(f"unimq-test-{kind}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    c.with_kwargs(labels={FIXTURE_LABEL: kind, PID_LABEL: str(os.getpid())})
    return c


#: How often a broker whose container dies while starting is started afresh. Two JVMs
#: starting side by side on a loaded 2-core machine occasionally lose one (seen: the broker
#: process ending during start-up with nothing in its log); a second start of a fresh
#: container is the fix, and a broker that dies every time still fails the fixture.
START_ATTEMPTS = 2


def _start(handle: ContainerBroker) -> ContainerBroker:
    t0 = time.monotonic()
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            handle.container.start()
        except Exception:
            handle.remove()
            raise
        try:
            handle.wait_ready()
        except ContainerExited as exc:
            handle.remove()
            if attempt == START_ATTEMPTS:
                raise
            warnings.warn(
                f"starting {handle.kind} again in a fresh container: {exc}",
                RuntimeWarning,
                stacklevel=2,
            )
            continue
        except Exception:
            handle.remove()
            raise
        break
    handle.last_start_seconds = time.monotonic() - t0
    return handle


def start_rabbitmq(
    client: docker.DockerClient, version: str, *, primary: bool = True
) -> ContainerBroker:
    image, source = config.image_for("rabbitmq", version, primary=primary)
    flavor = ensure_image(client, image, source, "rabbitmq", version)
    port = probes.free_loopback_port()
    c = _new_container("rabbitmq", image).with_loopback_port(5672, port)
    url = f"amqp://guest:guest@{LOOPBACK}:{port}/"
    h = ContainerBroker(
        "rabbitmq",
        url,
        image=image,
        flavor=flavor,
        container=c,
        ready=lambda b: probes.amqp_ready(LOOPBACK, port),
        start_timeout=config.start_timeout(),
        version=version,
    )
    return _start(h)


KAFKA_CLUSTER_ID = "5L6g3nShT-eMCtK--X86sw"


def kafka_env(host_port: int, flavor: str) -> dict[str, str]:
    """Single-node KRaft configuration in the official image's env-var form
    (our local image accepts the same variables)."""
    env = {
        "CLUSTER_ID": KAFKA_CLUSTER_ID,
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        # EXTERNAL: published on the host as 127.0.0.1:<host_port> and advertised as such;
        # INTERNAL: the broker talking to itself inside the container.
        "KAFKA_LISTENERS": "EXTERNAL://0.0.0.0:9092,INTERNAL://localhost:29092,CONTROLLER://localhost:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"EXTERNAL://{LOOPBACK}:{host_port},INTERNAL://localhost:29092",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "INTERNAL",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS": "10",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_NUM_PARTITIONS": "1",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "true",
        "KAFKA_HEAP_OPTS": "-Xms256m -Xmx256m",
    }
    if flavor != "local":
        # official image: its default data dir, writable by its non-root user
        env["KAFKA_LOG_DIRS"] = "/tmp/kraft-combined-logs"
    return env


def start_kafka(
    client: docker.DockerClient, version: str, *, primary: bool = True
) -> ContainerBroker:
    image, source = config.image_for("kafka", version, primary=primary)
    flavor = ensure_image(client, image, source, "kafka", version)
    port = probes.free_loopback_port()
    c = _new_container("kafka", image).with_loopback_port(9092, port)
    c.with_envs(**kafka_env(port, flavor))

    def ready(_b: ContainerBroker) -> bool:
        brokers = probes.kafka_metadata(LOOPBACK, port)
        return bool(brokers) and any(p == port for _, _, p in brokers)

    h = ContainerBroker(
        "kafka",
        f"kafka://{LOOPBACK}:{port}",
        image=image,
        flavor=flavor,
        container=c,
        ready=ready,
        start_timeout=config.start_timeout(),
        version=version,
    )
    return _start(h)


ROCKETMQ_BROKER_CONF = """\
brokerClusterName=DefaultCluster
brokerName=broker-a
brokerId=0
brokerRole=ASYNC_MASTER
flushDiskType=ASYNC_FLUSH
namesrvAddr=127.0.0.1:9876
brokerIP1=127.0.0.1
autoCreateTopicEnable=true
autoCreateSubscriptionGroup=true
mappedFileSizeCommitLog=67108864
diskMaxUsedSpaceRatio=95
"""


def _local_rocketmq_command() -> list[str]:
    """The local image's entrypoint, with the broker's listenPort set from
    ``ROCKETMQ_BROKER_PORT`` first (idempotent, so a restarted container does it again)."""
    script = (
        'sed -i -E "s/^listenPort[[:space:]]*=.*/listenPort = $ROCKETMQ_BROKER_PORT/" '
        '"$ROCKETMQ_HOME/conf/broker.conf" && exec /usr/local/bin/unimq-rocketmq'
    )
    return ["bash", "-c", script]


def _official_rocketmq_command(grpc_port: int, broker_port: int = 10911) -> list[str]:
    """Name server + broker with the proxy in local mode for the official image
    (apache/rocketmq:5.x, scripts in $ROCKETMQ_HOME/bin). Best effort: written
    from the image's documented layout, not exercised on this project's CI."""
    script = f"""
set -e
cat > /tmp/unimq-broker.conf <<'EOF'
{ROCKETMQ_BROKER_CONF}listenPort={broker_port}
EOF
printf '{{"rocketMQClusterName":"DefaultCluster","namesrvAddr":"127.0.0.1:9876","grpcServerPort":{grpc_port},"grpcShutdownTimeSeconds":2}}' > /tmp/unimq-rmq-proxy.json
cd "$ROCKETMQ_HOME/bin"
JAVA_OPT_EXT="-Xms64m -Xmx128m" sh mqnamesrv &
sleep 3
JAVA_OPT_EXT="-Xms256m -Xmx512m -XX:MaxDirectMemorySize=256m" exec sh mqbroker -n 127.0.0.1:9876 --enable-proxy \\
    -c /tmp/unimq-broker.conf -pc /tmp/unimq-rmq-proxy.json
"""
    return ["sh", "-c", script]


def start_rocketmq(
    client: docker.DockerClient, version: str, *, primary: bool = True
) -> RocketMQContainerBroker:
    image, source = config.image_for("rocketmq", version, primary=primary)
    flavor = ensure_image(client, image, source, "rocketmq", version)
    # In local mode the proxy answers route queries with brokerIP1:grpcServerPort,
    # so the proxy must listen inside the container on the very port number
    # the host publishes.
    port = probes.free_loopback_port()
    # The broker advertises brokerIP1:listenPort through the name server, so its remoting
    # port, like the proxy's, uses the same number inside and outside the container. The name
    # server's own address is advertised nowhere: any host port will do.
    broker_port = probes.free_loopback_port()
    namesrv_port = probes.free_loopback_port()
    c = _new_container("rocketmq", image).with_loopback_port(port, port)
    c.with_loopback_port(broker_port, broker_port).with_loopback_port(9876, namesrv_port)
    c.with_env("ROCKETMQ_GRPC_PORT", str(port))
    c.with_env("ROCKETMQ_BROKER_PORT", str(broker_port))
    if flavor != "local":
        c.with_command(_official_rocketmq_command(port, broker_port))
    else:
        c.with_command(_local_rocketmq_command())

    def ready(b: ContainerBroker) -> bool:
        # Both flavours: the image's own unimq-rocketmq-ready checks the default broker
        # port 10911, not the one set here.
        code, _, _ = b.exec(
            [
                "bash",
                "-c",
                f"for p in 9876 {broker_port} {port}; do (exec 3<>/dev/tcp/127.0.0.1/$p) || exit 1; done",
            ]
        )
        if code != 0:
            return False
        # the broker must also be registered with the name server
        try:
            out = b.mqadmin("clusterList")  # type: ignore[attr-defined]
        except RuntimeError:
            return False
        return "broker-a" in out

    h = RocketMQContainerBroker(
        "rocketmq",
        f"rocketmq://{LOOPBACK}:{port}",
        image=image,
        flavor=flavor,
        container=c,
        ready=ready,
        start_timeout=config.start_timeout(),
        version=version,
    )
    h.namesrv_address = f"{LOOPBACK}:{namesrv_port}"
    h.broker_address = f"{LOOPBACK}:{broker_port}"
    return _start(h)


STARTERS = {"rabbitmq": start_rabbitmq, "kafka": start_kafka, "rocketmq": start_rocketmq}
