"""A 3-node RabbitMQ cluster on loopback, for the failover tests (``rabbitmq_cluster_broker``).

Every node is a container of the primary RabbitMQ image on the HOST network (no container
addresses: nodes talk to each other and clients talk to them on 127.0.0.1 only), with its own
free ports picked at start: AMQP (``listeners.tcp.default = 127.0.0.1:P``) and Erlang
distribution (``RABBITMQ_DIST_PORT``, bound to 127.0.0.1 with ``inet_dist_use_interface``).
Node names are ``rabbit-<n>@localhost``; the nodes share a random Erlang cookie.

The Erlang port mapper (epmd) maps those names to distribution ports. Its port is per cluster
(``ERL_EPMD_PORT``, free at start), so clusters of different xdist workers or engineers never
meet, and it runs in a fourth small container of the same image: an epmd started by a node's
own container would die with that node's SIGKILL and the survivors could no longer find each
other.

The nodes form the cluster with classic config peer discovery (every node lists the three
names); :func:`start_rabbitmq_cluster` returns once all three report the same three running
nodes, so a quorum queue declared afterwards gets a replica on each (RabbitMQ picks the
members among the running nodes when the queue is declared). Queue leaders follow RabbitMQ's
default ``client-local`` locator: a queue's leader is the node its declaring client was
connected to, which lets a test choose where leaders live (:meth:`RabbitMQCluster.url_of`).

No image change: the per-node settings go to ``/etc/rabbitmq/conf.d/`` at container start.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from dataclasses import dataclass, field

import docker
from docker.errors import DockerException, NotFound

from . import config, probes
from .containers import FIXTURE_LABEL, LOOPBACK, PID_LABEL, ensure_image
from .handle import BrokerUnavailable, wait_until

SIZE = 3
CONF_FILE = "/etc/rabbitmq/conf.d/60-unimq-cluster.conf"
COOKIE_FILE = "/var/lib/rabbitmq/.erlang.cookie"
# Writes the per-node config and the shared cookie, then runs the image's own entrypoint.
_NODE_SCRIPT = f"""set -e
mkdir -p /etc/rabbitmq/conf.d /var/lib/rabbitmq
printf '%s\\n' "$UNIMQ_CLUSTER_CONF" > {CONF_FILE}
printf '%s' "$UNIMQ_CLUSTER_COOKIE" > {COOKIE_FILE}
chown rabbitmq:rabbitmq {COOKIE_FILE}
chmod 400 {COOKIE_FILE}
exec /usr/local/bin/unimq-rabbitmq
"""


def node_name(n: int) -> str:
    return f"rabbit-{n}@localhost"


@dataclass
class ClusterNode:
    name: str
    amqp_port: int
    dist_port: int
    cli_port: int
    container: docker.models.containers.Container | None = None


@dataclass
class RabbitMQCluster:
    """The running cluster. ``url`` names every node (``amqp://guest:guest@127.0.0.1:P1,...``);
    :meth:`url_of` one node only. :meth:`kill` is a SIGKILL; :meth:`start` waits until the
    node runs and the cluster counts it again."""

    client: docker.DockerClient
    image: str
    version: str
    epmd_port: int
    cookie: str = field(repr=False)
    members: dict[str, ClusterNode]
    epmd: docker.models.containers.Container | None = None
    #: seconds from the first container start until the cluster was formed
    start_seconds: float = 0.0
    #: seconds the last :meth:`start` took until the node had rejoined
    last_start_seconds: float = 0.0
    kind: str = "rabbitmq"

    @property
    def nodes(self) -> list[str]:
        return list(self.members)

    @property
    def url(self) -> str:
        hosts = ",".join(f"{LOOPBACK}:{m.amqp_port}" for m in self.members.values())
        return f"amqp://guest:guest@{hosts}/"

    def url_of(self, node: str) -> str:
        return f"amqp://guest:guest@{LOOPBACK}:{self.members[node].amqp_port}/"

    def url_starting_at(self, node: str) -> str:
        """:attr:`url` with ``node`` first: clients connect there and fail over to the rest."""
        order = [node, *(n for n in self.members if n != node)]
        hosts = ",".join(f"{LOOPBACK}:{self.members[n].amqp_port}" for n in order)
        return f"amqp://guest:guest@{hosts}/"

    # -- control -------------------------------------------------------------------------
    def _container(self, node: str) -> docker.models.containers.Container:
        container = self.members[node].container
        assert container is not None, f"{node} was never started"
        return container

    def running(self, node: str) -> bool:
        try:
            container = self._container(node)
            container.reload()
            return bool(container.status == "running")
        except NotFound:
            return False

    def kill(self, node: str) -> None:
        """SIGKILL the node's container (its data stays for :meth:`start`)."""
        self._container(node).kill()
        wait_until(lambda: not self.running(node), 30, f"{node} kill")

    def start(self, node: str, timeout: float | None = None) -> None:
        """Start a killed node again; return when it runs and every node sees it running."""
        t0 = time.monotonic()
        self._container(node).start()
        self.wait_formed(timeout)
        self.last_start_seconds = time.monotonic() - t0

    def rabbitmqctl(self, node: str, *args: str, tool: str = "rabbitmqctl") -> tuple[int, str]:
        """Run a CLI tool in ``node``'s container against ``node``; (exit code, output)."""
        member = self.members[node]
        result = self._container(node).exec_run(
            [tool, "-q", "-n", member.name, *args],
            user="rabbitmq",
            environment={
                "HOME": "/var/lib/rabbitmq",
                "ERL_EPMD_PORT": str(self.epmd_port),
                # the CLI's own distribution port (the default, dist port + 10000, can be > 65535)
                "RABBITMQ_CTL_DIST_PORT_MIN": str(member.cli_port),
                "RABBITMQ_CTL_DIST_PORT_MAX": str(member.cli_port),
            },
        )
        return result.exit_code, (result.output or b"").decode(errors="replace")

    def running_nodes(self, node: str) -> set[str]:
        """The cluster's running nodes as ``node`` sees them (empty when it cannot tell)."""
        if not self.running(node):
            return set()
        code, out = self.rabbitmqctl(node, "cluster_status", "--formatter", "json")
        if code != 0:
            return set()
        try:
            return set(json.loads(out[out.index("{") :]).get("running_nodes", []))
        except ValueError:
            return set()

    def queue_leaders(self) -> dict[str, str]:
        """Queue name -> the node (``rabbit-<n>``) that leads it, asked of a running node."""
        node = next(n for n in self.members if self.running(n))
        code, out = self.rabbitmqctl(node, "list_queues", "name", "leader", "--formatter", "json")
        if code != 0:
            raise RuntimeError(f"list_queues on {node} failed: {out}")
        rows = json.loads(out[out.index("[") :])
        return {row["name"]: str(row["leader"]).split("@")[0] for row in rows}

    def formed(self) -> bool:
        """Every node answers AMQP and the first running node counts all of them running."""
        if not all(probes.amqp_ready(LOOPBACK, m.amqp_port) for m in self.members.values()):
            return False
        first = next(n for n in self.members if self.running(n))
        return self.running_nodes(first) == {m.name for m in self.members.values()}

    def wait_formed(self, timeout: float | None = None) -> float:
        return wait_until(
            self.formed,
            config.start_timeout() if timeout is None else timeout,
            f"RabbitMQ cluster ({self.image})",
            interval=1.0,
            on_timeout=self.log_tails,
        )

    def log_tails(self, tail: int = 40) -> str:
        parts = []
        for node in self.members:
            try:
                text = self._container(node).logs(tail=tail).decode(errors="replace")
            except (DockerException, AssertionError) as e:
                text = f"<no logs: {e}>"
            parts.append(f"--- {node} log tail ---\n{text}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Remove every container of the cluster (nodes and epmd)."""
        for container in [m.container for m in self.members.values()] + [self.epmd]:
            if container is None:
                continue
            try:
                container.remove(force=True, v=True)
            except DockerException:
                pass

    remove = stop  # the fixtures' _release() calls remove()


def _node_conf(member: ClusterNode) -> str:
    peers = "\n".join(
        f"cluster_formation.classic_config.nodes.{n} = {node_name(n)}" for n in range(1, SIZE + 1)
    )
    return f"""listeners.tcp.default = {LOOPBACK}:{member.amqp_port}
cluster_formation.peer_discovery_backend = classic_config
{peers}
"""


def _labels() -> dict[str, str]:
    return {FIXTURE_LABEL: "rabbitmq-cluster", PID_LABEL: str(os.getpid())}


def start_rabbitmq_cluster(client: docker.DockerClient, version: str) -> RabbitMQCluster:
    """Start epmd and three nodes, wait until they formed one cluster (see the module doc)."""
    image, source = config.image_for("rabbitmq", version, primary=True)
    ensure_image(client, image, source, "rabbitmq", version)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
    members = {
        f"rabbit-{n}": ClusterNode(
            name=node_name(n),
            amqp_port=probes.free_loopback_port(),
            dist_port=probes.free_loopback_port(),
            cli_port=probes.free_loopback_port(),
        )
        for n in range(1, SIZE + 1)
    }
    cluster = RabbitMQCluster(
        client=client,
        image=image,
        version=version,
        epmd_port=probes.free_loopback_port(),
        cookie=secrets.token_hex(16),
        members=members,
    )
    t0 = time.monotonic()
    try:
        cluster.epmd = client.containers.run(
            image,
            ["epmd", "-port", str(cluster.epmd_port), "-address", LOOPBACK],
            name=f"unimq-test-rabbitmq-epmd-{tag}",
            detach=True,
            network_mode="host",
            labels=_labels(),
            user="rabbitmq",
        )
        wait_until(
            lambda: _listening(cluster.epmd_port),
            30,
            "epmd",
            on_timeout=lambda: _logs(cluster.epmd),
        )
        for key, member in members.items():
            member.container = client.containers.run(
                image,
                ["sh", "-c", _NODE_SCRIPT],
                name=f"unimq-test-rabbitmq-{key}-{tag}",
                detach=True,
                network_mode="host",
                labels=_labels(),
                environment={
                    "RABBITMQ_NODENAME": member.name,
                    "RABBITMQ_DIST_PORT": str(member.dist_port),
                    "ERL_EPMD_PORT": str(cluster.epmd_port),
                    "ERL_EPMD_ADDRESS": LOOPBACK,
                    "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                        "+S 2:2 +A 8 -kernel inet_dist_use_interface {127,0,0,1}"
                    ),
                    "UNIMQ_CLUSTER_CONF": _node_conf(member),
                    "UNIMQ_CLUSTER_COOKIE": cluster.cookie,
                },
            )
        cluster.wait_formed()
    except BaseException:
        cluster.stop()
        raise
    cluster.start_seconds = time.monotonic() - t0
    return cluster


def _listening(port: int) -> bool:
    import socket

    try:
        with socket.create_connection((LOOPBACK, port), timeout=1):
            return True
    except OSError:
        return False


def _logs(container: docker.models.containers.Container | None) -> str:
    if container is None:
        return ""
    try:
        return str(container.logs(tail=40).decode(errors="replace"))
    except DockerException as e:
        return f"<no logs: {e}>"


def get_rabbitmq_cluster(version: str) -> RabbitMQCluster:
    """The cluster for the fixture; :class:`BrokerUnavailable` when it cannot run here."""
    from .containers import docker_client, remove_orphans

    if config.mode() == "external":
        raise BrokerUnavailable(
            "the RabbitMQ cluster runs as containers only (UNIMQ_TEST_BROKERS=external)"
        )
    client = docker_client()
    remove_orphans(client)
    try:
        return start_rabbitmq_cluster(client, version)
    except (DockerException, TimeoutError, RuntimeError) as e:
        raise BrokerUnavailable(f"the 3-node RabbitMQ cluster did not start: {e}") from None
