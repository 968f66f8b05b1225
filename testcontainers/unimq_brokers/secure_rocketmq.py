"""A RocketMQ 5 broker with security on: ACL 2.0 (access key / secret key) and TLS on the
proxy's gRPC port.

The same image as the plain fixture, started with a different command: before the image's own
entrypoint it writes the throwaway server key and certificate (``unimq_brokers.server_tls``, handed
over in the container's environment, never in the repository), turns on ACL 2.0 in the broker
configuration (users and ACLs stored by the broker) and in the proxy configuration (which asks
the broker), points the proxy's gRPC server at the certificate, and makes TLS mandatory
(``-Dtls.server.mode=enforcing``; the default, permissive, also accepts plaintext). The same
JVM also serves the broker's remoting port, which is therefore TLS-only as well: the fixture's
``mqadmin`` speaks TLS and signs its requests as the super user (``conf/tools.yml``).

Users:

* ``admin`` — super user (``initAuthenticationUser``); provisions users, ACLs and topics.
* ``app`` — may publish and subscribe on topics ``sec*`` and ``conf*`` and subscribe as groups
  ``sec*``, ``conf*`` and ``unimq*``; nothing else (``denied*`` topics and groups are the "not
  allowed" cases).
"""

from __future__ import annotations

import functools
import json
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker

from . import config, probes
from .containers import (
    LOOPBACK,
    RocketMQContainerBroker,
    _new_container,
    _start,
    ensure_image,
)
from .handle import BrokerUnavailable
from .server_tls import ServerTLS, make_server_tls

_CERT = "/var/lib/rocketmq/tls/server.pem"
_KEY = "/var/lib/rocketmq/tls/server.key"
#: Name prefixes (RocketMQ names) the limited user may use; ``conf``: the conformance suite's.
TOPIC_PREFIXES = ("sec", "conf")
GROUP_PREFIXES = ("sec", "conf", "unimq")


class SecureRocketMQBroker(RocketMQContainerBroker):
    """``.url`` (the limited user, TLS on), ``.tls``, ``.app_secret``, ``.admin_secret``."""

    tls: ServerTLS
    admin_secret: str
    app_secret: str

    def __repr__(self) -> str:  # the URL holds the throwaway secret key
        return f"<SecureRocketMQBroker rocketmq {self.host}:{self.port} image={self.image}>"

    def url_for(self, access_key: str, secret_key: str, **query: str) -> str:
        params = {"tls": "true", "tls_ca_file": str(self.tls.ca_cert), **query}
        tail = "&".join(f"{k}={v}" for k, v in params.items())
        return f"rocketmq://{access_key}:{secret_key}@{self.host}:{self.port}?{tail}"

    def provisioner(self) -> Any:
        """A transport ``provisioner=`` creating topics and groups with this fixture's
        ``mqadmin`` (TLS, super user): the adapter's own remoting provisioner does not sign
        its requests or speak TLS, and the gRPC proxy cannot create them."""
        from unimq_rocketmq.provisioning import from_sync

        def create(kind: str, name: str, **attrs: Any) -> None:
            if kind == "topic":
                self.create_topic(name, str(attrs.get("message_type", "DELAY")))
            else:
                self.create_group(name, orderly=bool(attrs.get("orderly", False)))

        return from_sync(create)

    def mqadmin(self, *args: str, timeout: float = 120) -> str:
        """mqadmin over TLS, signed as the super user (``conf/tools.yml``)."""
        script = (
            ". /opt/rocketmq/jvm.sh; exec java -Xms32m -Xmx128m -XX:TieredStopAtLevel=1 "
            "$RMQ_JDK17_OPENS -Drocketmq.home.dir=$ROCKETMQ_HOME -Duser.home=/tmp "
            "-Dtls.enable=true -Dtls.client.authServer=false "
            "-Drmq.logback.configurationFile=$ROCKETMQ_HOME/conf/rmq.tools.logback.xml "
            '-cp "$RMQ_CP" org.apache.rocketmq.tools.command.MQAdminStartup "$@"'
        )
        code, out, err = self.exec(["bash", "-c", script, "mqadmin", *args])
        if code != 0 or "Exception" in out:
            # only the sub-command: the arguments may hold a secret key
            raise RuntimeError(f"mqadmin {args[0]} failed (exit {code}):\n{out}\n{err}")
        return out


def _command(broker_port: int, grpc_port: int, admin_secret: str) -> list[str]:
    broker_conf = "\n".join(
        [
            "authenticationEnabled = true",
            "authenticationProvider = org.apache.rocketmq.auth.authentication.provider.DefaultAuthenticationProvider",
            "authenticationMetadataProvider = org.apache.rocketmq.auth.authentication.provider.LocalAuthenticationMetadataProvider",
            "authorizationEnabled = true",
            "authorizationProvider = org.apache.rocketmq.auth.authorization.provider.DefaultAuthorizationProvider",
            "authorizationMetadataProvider = org.apache.rocketmq.auth.authorization.provider.LocalAuthorizationMetadataProvider",
            "initAuthenticationUser = "
            + json.dumps({"username": "admin", "password": admin_secret}, separators=(",", ":")),
        ]
    )
    proxy = {
        "rocketMQClusterName": "DefaultCluster",
        "namesrvAddr": "127.0.0.1:9876",
        "proxyMode": "local",
        "grpcServerPort": grpc_port,
        "remotingListenPort": 8080,
        "useEndpointPortFromRequest": True,
        "grpcShutdownTimeSeconds": 2,
        "grpcThreadPoolNums": 8,
        "enablePrintJstack": False,
        "tlsTestModeEnable": False,
        "tlsKeyPath": _KEY,
        "tlsCertPath": _CERT,
        "authenticationEnabled": True,
        "authenticationProvider": "org.apache.rocketmq.auth.authentication.provider.DefaultAuthenticationProvider",
        "authenticationMetadataProvider": "org.apache.rocketmq.proxy.auth.ProxyAuthenticationMetadataProvider",
        "authorizationEnabled": True,
        "authorizationProvider": "org.apache.rocketmq.auth.authorization.provider.DefaultAuthorizationProvider",
        "authorizationMetadataProvider": "org.apache.rocketmq.proxy.auth.ProxyAuthorizationMetadataProvider",
    }
    script = f"""set -e
umask 077
mkdir -p /var/lib/rocketmq/tls
printf '%s' "$UNIMQ_TLS_CERT_PEM" > {_CERT}
printf '%s' "$UNIMQ_TLS_KEY_PEM" > {_KEY}
printf 'accessKey: admin\\nsecretKey: %s\\n' "$UNIMQ_ADMIN_SECRET" > "$ROCKETMQ_HOME/conf/tools.yml"
unset UNIMQ_TLS_CERT_PEM UNIMQ_TLS_KEY_PEM UNIMQ_ADMIN_SECRET
conf="$ROCKETMQ_HOME/conf/broker.conf"
grep -q '^authenticationEnabled' "$conf" || cat >> "$conf" <<'EOF'
{broker_conf}
EOF
sed -i -E "s/^listenPort[[:space:]]*=.*/listenPort = {broker_port}/" "$conf"
cat > "$ROCKETMQ_HOME/conf/rmq-proxy.json" <<'EOF'
{json.dumps(proxy, indent=1)}
EOF
exec /usr/local/bin/unimq-rocketmq
"""
    return ["bash", "-c", script]


def start_secure_rocketmq(
    client: docker.DockerClient, version: str, *, primary: bool = True
) -> SecureRocketMQBroker:
    image, source = config.image_for("rocketmq", version, primary=primary)
    flavor = ensure_image(client, image, source, "rocketmq", version)
    if flavor != "local":
        raise BrokerUnavailable("the secured RocketMQ fixture needs the locally built image")
    tls = make_server_tls(("127.0.0.1",))
    admin_secret, app_secret = secrets.token_hex(16), secrets.token_hex(16)
    port = probes.free_loopback_port()
    broker_port = probes.free_loopback_port()
    namesrv_port = probes.free_loopback_port()
    c = _new_container("rocketmq-secure", image).with_loopback_port(port, port)
    c.with_loopback_port(broker_port, broker_port).with_loopback_port(9876, namesrv_port)
    c.with_envs(
        ROCKETMQ_GRPC_PORT=str(port),
        ROCKETMQ_BROKER_PORT=str(broker_port),
        ROCKETMQ_BROKER_HEAP="-Xms192m -Xmx384m -XX:MaxDirectMemorySize=192m -Dtls.server.mode=enforcing",
        UNIMQ_TLS_CERT_PEM=tls.server_cert.read_text(),
        UNIMQ_TLS_KEY_PEM=tls.server_key.read_text(),
        UNIMQ_ADMIN_SECRET=admin_secret,
    )
    c.with_command(_command(broker_port, port, admin_secret))

    def ready(b: Any) -> bool:
        code, _, _ = b.exec(
            [
                "bash",
                "-c",
                f"for p in 9876 {broker_port} {port}; do (exec 3<>/dev/tcp/127.0.0.1/$p) || exit 1; done",
            ]
        )
        if code != 0:
            return False
        try:
            out = b.mqadmin("clusterList")
        except RuntimeError:
            return False
        return "broker-a" in out

    h = SecureRocketMQBroker(
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
    h.tls, h.admin_secret, h.app_secret = tls, admin_secret, app_secret
    _start(h)
    h.url = h.url_for("app", app_secret)
    try:
        provision(h, broker_port)
    except Exception:
        h.remove()
        raise
    return h


#: unimq topics the fixture creates (the proxy cannot): one the user may use, one it may not.
ALLOWED_TOPIC = "sec.t1"
DENIED_TOPIC = "denied.t1"


def provision(h: SecureRocketMQBroker, broker_port: int) -> None:
    """The limited user, its ACLs and the test topics, as the super user."""
    from unimq_rocketmq import names

    b = f"127.0.0.1:{broker_port}"
    h.mqadmin("createUser", "-b", b, "-u", "app", "-p", h.app_secret, "-t", "Normal")
    topics = ",".join(f"Topic:{prefix}*" for prefix in TOPIC_PREFIXES)
    groups = ",".join(f"Group:{prefix}*" for prefix in GROUP_PREFIXES)

    # Each mqadmin call is a JVM start: create the topics while the ACLs are written. The two
    # ACL calls stay in sequence: the broker keeps one ACL record per subject, and concurrent
    # updates of it lose one another's policies.
    def acls() -> None:
        h.mqadmin(
            "createAcl", "-b", b, "-s", "User:app", "-r", topics, "-a", "Pub,Sub", "-d", "Allow"
        )
        h.mqadmin("createAcl", "-b", b, "-s", "User:app", "-r", groups, "-a", "Sub", "-d", "Allow")

    calls: list[Callable[[], object]] = [
        acls,
        *(
            functools.partial(h.create_topic, names.topic_name(topic), "DELAY")
            for topic in (ALLOWED_TOPIC, DENIED_TOPIC)
        ),
    ]
    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(call) for call in calls]:
            future.result()
    acls = h.mqadmin("listAcl", "-b", b, "-s", "User:app")
    missing = [p for p in (*TOPIC_PREFIXES, *GROUP_PREFIXES) if f":{p}*" not in acls]
    if missing:
        raise BrokerUnavailable(f"ACLs of the app user missing for {missing}: {acls}")
