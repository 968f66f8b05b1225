"""A two-broker RocketMQ 5 cluster on the host's loopback, for the failover tests.

Layout (every process on the host network, every listener on 127.0.0.1, every port picked
free at start, so parallel xdist workers and other users of the machine never collide):

* ``namesrv``: one name server (container of its own; not a failure target);
* ``broker-a`` and ``broker-b``: the *nodes*. Each is one container running a master broker
  (its own ``brokerName``, so the two hold different queues of every topic: RocketMQ's
  horizontal scaling, not a replica pair) and, beside it, a gRPC proxy in *cluster* mode.

Why a cluster-mode proxy per node rather than the single image's local-mode proxy: a
local-mode proxy answers route queries with *its own* gRPC port for every broker and serves
every request from its embedded broker, so a client connected to it would never reach the other
broker. A cluster-mode proxy forwards each request to whichever broker owns the queue, and
answers routes with the address the client used; the client is given both proxies
(``rocketmq://127.0.0.1:P1,127.0.0.1:P2``), one gRPC channel over both, and gRPC moves to the
other proxy when the one it uses dies. So ``kill(node)`` is a machine failure: the broker and
the proxy on it die together.

Settings the failover relies on (see docs/deployment.md, RocketMQ):

* the proxy's ``sendLatencyEnable`` / ``startDetectorEnable``: a broker that failed a send is
  avoided for the next ones (the proxy, not the client, picks the queue of a normal message);
* ``topicRouteServiceCacheRefreshSeconds`` (default 20): how soon the proxy's routes drop a
  dead broker and take it back; short here so a test sees both within seconds.

Broker ports: ``listenPort`` L, and the ports the broker derives from it, ``fastListenPort``
L-2 and ``haListenPort`` L+1, must all be free: :func:`_broker_port` probes the block.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from typing import Any

import docker
from docker.errors import DockerException, NotFound

from . import config, probes
from .containers import FIXTURE_LABEL, LOOPBACK, PID_LABEL, LoopbackContainer, ensure_image
from .handle import BrokerUnavailable, wait_until

CLUSTER = "DefaultCluster"
NODES = ("broker-a", "broker-b")

NAMESRV_HEAP = "-Xms32m -Xmx96m"
BROKER_HEAP = "-Xms128m -Xmx256m -XX:MaxDirectMemorySize=256m"
PROXY_HEAP = "-Xms64m -Xmx160m -XX:MaxDirectMemorySize=128m"

#: Seconds the proxy keeps a topic route before asking the name server again.
PROXY_ROUTE_REFRESH = 3

_JAVA = (
    ". /opt/rocketmq/jvm.sh; exec java {heap} $RMQ_JAVA_COMMON "
    "-Drmq.logback.configurationFile=$ROCKETMQ_HOME/conf/rmq.logback.xml "
    '-Drmq.log.name={log} -cp "$RMQ_CP" {main}'
)

_BROKER_CONF = """\
brokerClusterName = {cluster}
brokerName = {name}
brokerId = 0
brokerRole = ASYNC_MASTER
flushDiskType = ASYNC_FLUSH
namesrvAddr = 127.0.0.1:{namesrv}
brokerIP1 = 127.0.0.1
listenPort = {port}
storePathRootDir = /var/lib/rocketmq/store
storePathCommitLog = /var/lib/rocketmq/store/commitlog
mappedFileSizeCommitLog = 67108864
mappedFileSizeTimerLog = 16777216
diskMaxUsedSpaceRatio = 95
autoCreateTopicEnable = false
autoCreateSubscriptionGroup = true
timerWheelEnable = true
enablePropertyFilter = true
# A send may wait this long for the broker's send threads before "broker busy" (default
# 200 ms); test machines share their cores, and a refused send is not what these tests test.
waitTimeMillsInSendQueue = 3000
osPageCacheBusyTimeOutMills = 3000
"""


def _free_port(reserved: set[int]) -> int:
    while True:
        port = probes.free_loopback_port()
        if port not in reserved:
            reserved.add(port)
            return port


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _broker_port(reserved: set[int]) -> int:
    """A broker ``listenPort`` L with L-2 (fastListenPort) and L+1 (haListenPort) free too."""
    for _ in range(200):
        port = probes.free_loopback_port()
        block = {port - 2, port, port + 1}
        if port - 2 > 1024 and not block & reserved and all(map(_bindable, block - {port})):
            reserved.update(block)
            return port
    raise BrokerUnavailable("no free port block for a RocketMQ broker on 127.0.0.1")


class Node:
    """One container: a master broker and its cluster-mode proxy."""

    def __init__(self, name: str, broker_port: int, grpc_port: int, remoting_port: int) -> None:
        self.name = name
        self.broker_port = broker_port
        self.grpc_port = grpc_port
        self.remoting_port = remoting_port
        self.container: LoopbackContainer | None = None

    @property
    def broker_address(self) -> str:
        return f"{LOOPBACK}:{self.broker_port}"

    @property
    def proxy_address(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"


class RocketMQCluster:
    """Handle of the running cluster (what ``rocketmq_cluster_broker`` yields).

    ``url``: both proxies; ``url_of(node)``: that node's proxy only; ``nodes``: the node names;
    ``kill(node)`` (SIGKILL of broker and proxy), ``start(node)`` (same ports, same store; waits
    until the broker is registered again and the proxy answers); ``namesrv_address``,
    ``broker_addresses`` for the admin protocol; ``stop()`` removes every container.
    """

    kind = "rocketmq"
    can_control = True

    def __init__(self, client: docker.DockerClient, image: str, version: str) -> None:
        self.client = client
        self.image = image
        self.version = version
        reserved: set[int] = set()
        self.namesrv_port = _free_port(reserved)
        self._nodes = {
            name: Node(name, _broker_port(reserved), _free_port(reserved), _free_port(reserved))
            for name in NODES
        }
        self._namesrv: LoopbackContainer | None = None
        self.tag = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
        #: seconds the cluster took to start, and the last ``start(node)`` took
        self.start_seconds: float | None = None
        self.last_start_seconds: float | None = None

    # -- addresses ---------------------------------------------------------------------------
    @property
    def nodes(self) -> list[str]:
        return list(self._nodes)

    @property
    def namesrv_address(self) -> str:
        return f"{LOOPBACK}:{self.namesrv_port}"

    @property
    def broker_addresses(self) -> list[str]:
        return [node.broker_address for node in self._nodes.values()]

    @property
    def url(self) -> str:
        proxies = ",".join(node.proxy_address for node in self._nodes.values())
        return f"rocketmq://{proxies}"

    def url_of(self, node: str) -> str:
        return f"rocketmq://{self._node(node).proxy_address}"

    def proxy_port(self, node: str) -> int:
        return self._node(node).grpc_port

    def broker_address_of(self, node: str) -> str:
        return self._node(node).broker_address

    def _node(self, name: str) -> Node:
        try:
            return self._nodes[name]
        except KeyError:
            raise ValueError(f"no node {name!r}; nodes: {', '.join(self._nodes)}") from None

    # -- containers --------------------------------------------------------------------------
    def _container(self, role: str, script: str, env: dict[str, str]) -> LoopbackContainer:
        c = LoopbackContainer(self.image)
        c.with_name(f"unimq-test-rmqcluster-{role}-{self.tag}")
        c.with_kwargs(
            labels={FIXTURE_LABEL: "rocketmq-cluster", PID_LABEL: str(os.getpid())},
            network_mode="host",
        )
        c.with_envs(**env)
        c.with_command(["bash", "-c", script])
        return c

    def _namesrv_script(self) -> str:
        java = _JAVA.format(
            heap=NAMESRV_HEAP,
            log="namesrv",
            main="org.apache.rocketmq.namesrv.NamesrvStartup -c /tmp/namesrv.conf",
        )
        return f"printf 'listenPort = {self.namesrv_port}\\n' > /tmp/namesrv.conf\n{java}\n"

    def _node_script(self, node: Node) -> str:
        conf = _BROKER_CONF.format(
            cluster=CLUSTER, name=node.name, namesrv=self.namesrv_port, port=node.broker_port
        )
        proxy = {
            "rocketMQClusterName": CLUSTER,
            "namesrvAddr": self.namesrv_address,
            "proxyMode": "cluster",
            "grpcServerPort": node.grpc_port,
            "remotingListenPort": node.remoting_port,
            "useEndpointPortFromRequest": True,
            "grpcShutdownTimeSeconds": 2,
            "grpcThreadPoolNums": 8,
            "enablePrintJstack": False,
            "sendLatencyEnable": True,
            "startDetectorEnable": True,
            "topicRouteServiceCacheRefreshSeconds": PROXY_ROUTE_REFRESH,
        }
        broker = _JAVA.format(
            heap=BROKER_HEAP,
            log="broker",
            main="org.apache.rocketmq.broker.BrokerStartup -c /tmp/broker.conf",
        ).replace("exec java", "java")
        proxy_java = _JAVA.format(
            heap=PROXY_HEAP,
            log="proxy",
            main=f"org.apache.rocketmq.proxy.ProxyStartup -pm cluster -pc /tmp/proxy.json "
            f"-n {self.namesrv_address}",
        ).replace("exec java", "java")
        # Both JVMs in one container: when either dies the container exits (like a machine).
        return f"""set -u
mkdir -p /var/log/rocketmq /var/lib/rocketmq/store
cat > /tmp/broker.conf <<'EOF'
{conf}EOF
cat > /tmp/proxy.json <<'EOF'
{json.dumps(proxy)}
EOF
{broker} &
b=$!
# The proxy creates system topics on the cluster as it starts: only once this broker listens
# (it registers with the name server as it opens the port); again if it gave up too early.
until (exec 3<>/dev/tcp/127.0.0.1/{node.broker_port}) 2>/dev/null; do
  kill -0 $b 2>/dev/null || exit 1
  sleep 0.5
done
proxy() {{
  for _ in 1 2 3 4 5; do
    {proxy_java} && return 0
    echo "proxy exited; starting it again" >&2
    sleep 2
  done
  return 1
}}
proxy &
p=$!
trap 'kill -TERM $b $p 2>/dev/null; wait; exit 0' TERM INT
wait -n $b $p
kill -TERM $b $p 2>/dev/null
wait
exit 1
"""

    def _wrapped(self, c: LoopbackContainer) -> Any:
        return c.get_wrapped_container()

    def _running(self, c: LoopbackContainer | None) -> bool:
        if c is None:
            return False
        try:
            w = self._wrapped(c)
            w.reload()
            return w.status in {"running", "created", "restarting"}
        except (NotFound, DockerException):
            return False

    def logs(self, name: str, tail: int = 60) -> str:
        c = self._namesrv if name == "namesrv" else self._node(name).container
        if c is None:
            return "<not started>"
        try:
            return self._wrapped(c).logs(tail=tail).decode(errors="replace")
        except DockerException as e:  # pragma: no cover - diagnostics only
            return f"<no logs: {e}>"

    # -- readiness ---------------------------------------------------------------------------
    def registered(self) -> dict[str, str]:
        """Broker name -> master address, as the name server lists them now. Blocking: from a
        coroutine, call it (or :meth:`node_ready`) through ``asyncio.to_thread``."""
        from unimq_rocketmq import remoting

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("RocketMQCluster.registered() blocks: use asyncio.to_thread")

        async def ask() -> Any:
            response = await remoting.call(
                self.namesrv_address, remoting.GET_BROKER_CLUSTER_INFO, {}, timeout=2.0
            )
            return remoting.loads_fastjson(remoting.checked(response, "cluster info").body)

        try:
            info = asyncio.run(ask())
        except Exception:
            return {}
        table = info.get("brokerAddrTable") or {}
        found: dict[str, str] = {}
        for name, data in table.items():
            master = ((data or {}).get("brokerAddrs") or {}).get(0) or (
                (data or {}).get("brokerAddrs") or {}
            ).get("0")
            if master:
                found[str(name)] = str(master)
        return found

    def node_ready(self, name: str) -> bool:
        node = self._node(name)
        if self.registered().get(name) != node.broker_address:
            return False
        return probes.tcp_open(LOOPBACK, node.grpc_port) and probes.tcp_open(
            LOOPBACK, node.remoting_port
        )

    def _wait_node(self, name: str, timeout: float) -> float:
        node = self._node(name)
        return wait_until(
            lambda: self.node_ready(name),
            timeout,
            f"rocketmq cluster node {name}",
            on_timeout=lambda: "--- container log tail ---\n" + self.logs(name),
            alive=lambda: self._running(node.container),
        )

    # -- lifecycle ---------------------------------------------------------------------------
    def start_cluster(self) -> RocketMQCluster:
        t0 = time.monotonic()
        timeout = config.start_timeout()
        try:
            self._namesrv = self._container(
                "namesrv", self._namesrv_script(), {"ROCKETMQ_VERSION": self.version}
            )
            self._namesrv.start()
            wait_until(
                lambda: probes.tcp_open(LOOPBACK, self.namesrv_port),
                timeout,
                "rocketmq cluster name server",
                on_timeout=lambda: self.logs("namesrv"),
                alive=lambda: self._running(self._namesrv),
            )
            for node in self._nodes.values():
                node.container = self._container(node.name, self._node_script(node), {})
                node.container.start()
            for name in self._nodes:
                self._wait_node(name, timeout)
        except Exception:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def kill(self, node: str) -> None:
        """SIGKILL the node's container (its broker and its proxy die at once)."""
        c = self._node(node).container
        assert c is not None
        self._wrapped(c).kill()
        wait_until(lambda: not self._running(c), 30, f"rocketmq node {node} kill")

    def start(self, node: str, wait: bool = True) -> None:
        """Start a killed node again (same ports, same store); waits until it rejoined: its
        broker registered with the name server and its proxy listening."""
        c = self._node(node).container
        assert c is not None
        t0 = time.monotonic()
        self._wrapped(c).start()
        if wait:
            self._wait_node(node, config.start_timeout())
            self.last_start_seconds = time.monotonic() - t0

    def stop(self) -> None:
        """Remove every container of the cluster."""
        containers = [node.container for node in self._nodes.values()] + [self._namesrv]
        for c in containers:
            if c is None:
                continue
            try:
                c.stop(force=True, delete_volume=True)
            except (DockerException, AttributeError):
                pass

    remove = stop

    def __repr__(self) -> str:
        return f"<RocketMQCluster {self.url} namesrv={self.namesrv_address} image={self.image}>"


def start_rocketmq_cluster(client: docker.DockerClient, version: str) -> RocketMQCluster:
    """Start the name server and both nodes; the locally built image only (its scripts)."""
    image, source = config.image_for("rocketmq", version, primary=True)
    flavor = ensure_image(client, image, source, "rocketmq", version)
    if flavor != "local":
        raise BrokerUnavailable("the RocketMQ cluster fixture needs the locally built image")
    return RocketMQCluster(client, image, version).start_cluster()
