"""A 3-node Kafka KRaft cluster on the host's loopback, for the failover tests.

Every node is one container of the locally built Kafka image running as a combined broker and
controller (``process.roles=broker,controller``) on the HOST network: it listens on its own
``127.0.0.1`` client port and its own ``127.0.0.1`` controller port, both picked free when the
cluster starts, and advertises ``127.0.0.1:<client port>``. Node-to-node traffic (replication,
the controller quorum) therefore stays on loopback too; no container address is ever used.

The cluster is configured the way docs/deployment.md tells users to run one: replication
factor 3 for every topic (``default.replication.factor``, the consumer offsets and the
transaction state), ``min.insync.replicas=2``, so that unimq's ``acks=all`` publishes survive
the loss of any one node and unimq's own topics (created with ``replication_factor=-1``, the
broker default) are replicated without a unimq option.

``kill(node)`` is a SIGKILL of the node's container (its data stays in the container);
``start(node)`` starts it again and returns once it is back in the cluster and every replica
has caught up again (no under-replicated partition left).
"""

from __future__ import annotations

import base64
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import docker
from docker.errors import DockerException, NotFound

from . import config, probes
from .containers import FIXTURE_LABEL, LOOPBACK, PID_LABEL, ensure_image
from .handle import BrokerUnavailable, wait_until

__all__ = ["KafkaCluster", "cluster_env", "start_kafka_cluster"]

NODES = 3
#: Each node's JVM heap: three nodes share the machine with the rest of the suite.
HEAP = "-Xms256m -Xmx320m"
#: How long the controller waits for a silent broker before fencing it (and moving its
#: partition leaderships and ISR slots to the others). Kafka's default is 9 s; 6 s keeps the
#: failover tests short and is still far above a heartbeat interval on a loaded machine.
BROKER_SESSION_TIMEOUT_MS = 6000


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (all held open while probing, so the
    kernel cannot hand out one twice)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((LOOPBACK, 0))
            ports.append(s.getsockname()[1])
        return ports


def _cluster_id() -> str:
    """A fresh KRaft cluster id (a Kafka ``Uuid``: 16 bytes, URL-safe base64, no padding).

    Never one that starts with ``-``: the image's ``kafka-storage format -t $CLUSTER_ID`` would
    read it as an option and every node would exit at start-up ("argument --cluster-id/-t:
    expected one argument"), one cluster start in 64. Kafka's own ``Uuid.randomUuid()`` skips
    those ids for the same reason.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def cluster_env(
    node_id: int,
    client_ports: list[int],
    controller_ports: list[int],
    cluster_id: str,
    flavor: str,
) -> dict[str, str]:
    """The configuration of node ``node_id`` (1-based) as ``KAFKA_*`` environment variables
    (the local image's entrypoint and the official image both read them)."""
    voters = ",".join(f"{i}@{LOOPBACK}:{port}" for i, port in enumerate(controller_ports, start=1))
    client, controller = client_ports[node_id - 1], controller_ports[node_id - 1]
    env = {
        "CLUSTER_ID": cluster_id,
        "KAFKA_NODE_ID": str(node_id),
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": f"PLAINTEXT://{LOOPBACK}:{client},CONTROLLER://{LOOPBACK}:{controller}",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{LOOPBACK}:{client}",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "PLAINTEXT",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": voters,
        # What docs/deployment.md asks of a production cluster:
        "KAFKA_DEFAULT_REPLICATION_FACTOR": str(NODES),
        "KAFKA_MIN_INSYNC_REPLICAS": "2",
        "KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE": "false",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": str(NODES),
        "KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS": "10",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": str(NODES),
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "2",
        "KAFKA_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "10",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": str(NODES),
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "2",
        "KAFKA_BROKER_SESSION_TIMEOUT_MS": str(BROKER_SESSION_TIMEOUT_MS),
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_NUM_PARTITIONS": "3",
        # unimq creates its topics itself; a typo must not create one with other settings
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_NUM_NETWORK_THREADS": "2",
        "KAFKA_NUM_IO_THREADS": "2",
        "KAFKA_HEAP_OPTS": HEAP,
    }
    if flavor != "local":
        env["KAFKA_LOG_DIRS"] = "/tmp/kraft-combined-logs"
    return env


class KafkaCluster:
    """Handle of a running 3-node cluster.

    Attributes:
        url: ``kafka://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`` (every node).
        nodes: the node names, ``["kafka-1", "kafka-2", "kafka-3"]``.
        node_ids: node name -> Kafka broker id (1..3).
    """

    kind = "kafka"
    mode = "container"

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        image: str,
        flavor: str,
        version: str,
        client_ports: list[int],
        controller_ports: list[int],
        cluster_id: str,
    ) -> None:
        self._docker = client
        self.image = image
        self.flavor = flavor
        self.version = version
        self.cluster_id = cluster_id
        self.client_ports = client_ports
        self.controller_ports = controller_ports
        self.nodes = [f"kafka-{i}" for i in range(1, NODES + 1)]
        self.node_ids = {name: i for i, name in enumerate(self.nodes, start=1)}
        self._containers: dict[str, Any] = {}
        tag = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._names = {name: f"unimq-test-kafka-cluster-{tag}-{name}" for name in self.nodes}
        #: seconds each (re)start took until the node had rejoined
        self.last_start_seconds: float | None = None

    # -- addresses -------------------------------------------------------------
    def address_of(self, node: str) -> str:
        return f"{LOOPBACK}:{self.client_ports[self.node_ids[node] - 1]}"

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(self.address_of(node) for node in self.nodes)

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap_servers}"

    def url_of(self, node: str) -> str:
        """A URL naming ``node`` only (the client learns the others from its metadata)."""
        return f"kafka://{self.address_of(node)}"

    def node_of(self, broker_id: int) -> str:
        """The node name of Kafka broker id ``broker_id``."""
        return self.nodes[broker_id - 1]

    # -- lifecycle ---------------------------------------------------------------
    def _create(self, node: str) -> None:
        node_id = self.node_ids[node]
        self._containers[node] = self._docker.containers.run(
            self.image,
            detach=True,
            name=self._names[node],
            network_mode="host",
            environment=cluster_env(
                node_id, self.client_ports, self.controller_ports, self.cluster_id, self.flavor
            ),
            labels={FIXTURE_LABEL: "kafka-cluster", PID_LABEL: str(os.getpid())},
        )

    def _running(self, node: str) -> bool:
        try:
            container = self._containers[node]
            container.reload()
            return container.status in {"running", "created", "restarting"}
        except (NotFound, KeyError):
            return False

    def _brokers_seen_by(self, node: str) -> set[int]:
        port = self.client_ports[self.node_ids[node] - 1]
        brokers = probes.kafka_metadata(LOOPBACK, port)
        return {broker_id for broker_id, _, _ in brokers or []}

    def _wait_member(self, node: str, timeout: float) -> None:
        """Until ``node`` answers metadata listing every node of the cluster."""
        wanted = set(self.node_ids.values())
        wait_until(
            lambda: self._brokers_seen_by(node) >= wanted,
            timeout,
            f"kafka cluster node {node} ({self.image})",
            on_timeout=lambda: "--- node log tail ---\n" + self.logs(node, 60),
            alive=lambda: self._running(node),
        )

    def under_replicated(self) -> list[str]:
        """``topic/partition`` of every partition whose in-sync replicas are fewer than its
        replicas (asked of the live nodes through the admin client)."""
        from confluent_kafka.admin import AdminClient

        live = [node for node in self.nodes if self._running(node)]
        admin = AdminClient({"bootstrap.servers": ",".join(self.address_of(n) for n in live)})
        metadata = admin.list_topics(timeout=10)
        return [
            f"{name}/{pid}"
            for name, topic in metadata.topics.items()
            for pid, partition in topic.partitions.items()
            if len(partition.isrs) < len(partition.replicas)
        ]

    def start_all(self) -> None:
        t0 = time.monotonic()
        for node in self.nodes:
            self._create(node)
        for node in self.nodes:
            self._wait_member(node, config.start_timeout())
        self.last_start_seconds = time.monotonic() - t0

    def kill(self, node: str) -> None:
        """SIGKILL ``node``'s container (a crash: no clean shutdown, data kept)."""
        self._containers[node].kill()
        wait_until(lambda: not self._running(node), 30, f"kill of kafka cluster node {node}")

    def start(self, node: str, timeout: float | None = None) -> None:
        """Start the killed ``node`` again and wait until it has rejoined: it lists every node
        and no partition is under-replicated (its replicas caught up and are back in the ISR)."""
        limit = config.start_timeout() if timeout is None else timeout
        t0 = time.monotonic()
        self._containers[node].start()
        self._wait_member(node, limit)

        def caught_up() -> bool:
            try:
                return not self.under_replicated()
            except Exception:  # a metadata request during leader moves: ask again
                return False

        wait_until(
            caught_up,
            max(10.0, limit - (time.monotonic() - t0)),
            f"kafka cluster node {node} back in sync",
            on_timeout=lambda: f"under-replicated: {self.under_replicated()}",
        )
        self.last_start_seconds = time.monotonic() - t0

    def running(self) -> list[str]:
        return [node for node in self.nodes if self._running(node)]

    def logs(self, node: str, tail: int = 200) -> str:
        try:
            return bytes(self._containers[node].logs(tail=tail)).decode(errors="replace")
        except (DockerException, KeyError) as e:  # pragma: no cover - diagnostics only
            return f"<no logs: {e}>"

    def stop(self) -> None:
        """Remove every node's container (and its data). SIGKILL first: three JVMs stopping
        at once on a loaded machine can outlast the Docker client's timeout, and a container
        left behind is only removed by the next session's ``remove_orphans``."""
        for node in list(self._containers):
            container = self._containers.pop(node)
            for _ in range(2):
                try:
                    if container.status != "exited":
                        container.kill()
                except DockerException:
                    pass  # already stopped
                try:
                    container.remove(force=True, v=True)
                    break
                except NotFound:
                    break
                except DockerException:
                    continue  # once more; then the next session's remove_orphans

    remove = stop  # the fixtures' release hook calls remove()

    def __iter__(self) -> Iterator[str]:
        return iter(self.nodes)

    def __repr__(self) -> str:
        return f"<KafkaCluster {self.url} image={self.image} version={self.version}>"


def start_kafka_cluster(client: docker.DockerClient, version: str) -> KafkaCluster:
    """Start the three nodes and return once each lists all three; BrokerUnavailable when the
    image is missing, the cluster is removed again when it does not come up."""
    image, source = config.image_for("kafka", version, primary=True)
    flavor = ensure_image(client, image, source, "kafka", version)
    ports = _free_ports(2 * NODES)
    cluster = KafkaCluster(
        client,
        image=image,
        flavor=flavor,
        version=version,
        client_ports=ports[:NODES],
        controller_ports=ports[NODES:],
        cluster_id=_cluster_id(),
    )
    try:
        cluster.start_all()
    except DockerException as e:
        cluster.stop()
        raise BrokerUnavailable(f"kafka cluster could not start: {e}") from None
    except BaseException:
        cluster.stop()
        raise
    return cluster
