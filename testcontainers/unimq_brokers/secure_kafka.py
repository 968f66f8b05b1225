"""A Kafka broker with security on: SASL_SSL (SCRAM-SHA-512) and ACLs (StandardAuthorizer).

The same image as the plain fixture (locally built or the official ``apache/kafka``), started
with a different command: before the image's own entrypoint it writes the throwaway server key
and certificate chain (``unimq_brokers.server_tls``, generated per test session and handed over in the
container's environment, never in the repository) to a PEM keystore file, and formats the KRaft
storage with the SCRAM credentials (``kafka-storage format --add-scram``: KRaft has no
ZooKeeper to store them in afterwards, and the ``--ignore-formatted`` format of the entrypoint
keeps them).

Users:

* ``admin`` — super user; provisions topics and ACLs (the fixture does, at start).
* ``app`` — may create, describe, read and write topics named ``sec.*``, ``conf.*`` and
  ``unimq.*`` (the delay tiers), read only the topic ``sec.readonly``, and use the groups
  ``sec.*``, ``conf-*`` and ``unimq.*``; nothing else. The tests' "not allowed" cases use ``denied.*`` topics and groups.

The listener the host sees is ``EXTERNAL`` (SASL_SSL), published on 127.0.0.1 only and
advertised as ``127.0.0.1:<port>``, the only name on the server certificate. The broker talks
to itself over PLAINTEXT listeners bound to the container's own loopback; their principal
(``User:ANONYMOUS``) is a super user so the controller and the broker may talk, and nothing
outside the container can reach them.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import docker

from . import config, probes
from .containers import (
    LOOPBACK,
    ContainerBroker,
    _new_container,
    _start,
    ensure_image,
    kafka_env,
)
from .handle import BrokerUnavailable
from .server_tls import ServerTLS, make_server_tls

#: Topic and group name prefixes the limited user owns (``conf.``/``conf-``: the conformance
#: suite's names, for the smoke subset).
TOPIC_PREFIXES = ("sec.", "unimq.", "conf.")
GROUP_PREFIXES = ("sec.", "unimq.", "conf-")
#: An existing topic the limited user may read but not write.
READ_ONLY_TOPIC = "sec.readonly"

_KEYSTORE = "/tmp/unimq-server-keystore.pem"


class SecureKafkaBroker(ContainerBroker):
    """A secured Kafka container: ``.url`` (the limited user), ``.admin_url`` (the super user),
    ``.tls`` (the CA and server certificate files), ``.app_password``, ``.admin_password``."""

    tls: ServerTLS
    admin_password: str
    app_password: str

    def __repr__(self) -> str:  # the URL holds the throwaway password: not in test reports
        return f"<SecureKafkaBroker kafka {self.host}:{self.port} image={self.image}>"

    def url_for(self, user: str, password: str, **query: str) -> str:
        """``kafka://user:password@127.0.0.1:PORT?security_protocol=SASL_SSL&...`` with the
        SCRAM mechanism and the throwaway CA, plus ``query``."""
        params = {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "ssl_ca_location": str(self.tls.ca_cert),
            **query,
        }
        tail = "&".join(f"{k}={v}" for k, v in params.items())
        return f"kafka://{user}:{password}@{self.host}:{self.port}?{tail}"

    @property
    def admin_url(self) -> str:
        return self.url_for("admin", self.admin_password)

    def admin_config(self) -> dict[str, Any]:
        """librdkafka settings of the super user (for raw-client provisioning)."""
        return {
            "bootstrap.servers": f"{self.host}:{self.port}",
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "admin",
            "sasl.password": self.admin_password,
            "ssl.ca.location": str(self.tls.ca_cert),
        }


def secure_kafka_env(host_port: int, flavor: str, tls: ServerTLS) -> dict[str, str]:
    env = kafka_env(host_port, flavor)
    env.update(
        {
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": (
                "CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,EXTERNAL:SASL_SSL"
            ),
            "KAFKA_SASL_ENABLED_MECHANISMS": "SCRAM-SHA-512",
            "KAFKA_LISTENER_NAME_EXTERNAL_SCRAM___SHA___512_SASL_JAAS_CONFIG": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "KAFKA_SSL_KEYSTORE_TYPE": "PEM",
            "KAFKA_SSL_KEYSTORE_LOCATION": _KEYSTORE,
            "KAFKA_SSL_CLIENT_AUTH": "none",
            "KAFKA_AUTHORIZER_CLASS_NAME": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "KAFKA_SUPER_USERS": "User:admin;User:ANONYMOUS",
            "KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND": "false",
            # a secured broker never creates a topic because someone asked for its metadata
            "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
            # Room for the log cleaner's buffer (128 MiB, allocated in one piece when the
            # cleaner starts): with -Xmx256m this broker once died at start-up of
            # "OutOfMemoryError: Java heap space" right at "Starting the log cleaner". (A
            # smaller log.cleaner.dedupe.buffer.size instead left the 3-node cluster's group
            # coordinator unanswering after a failover in 3 of 5 runs, 0 of 3 without it.)
            "KAFKA_HEAP_OPTS": "-Xms256m -Xmx384m",
            # handed to the start command below, not broker properties (no KAFKA_ prefix)
            "UNIMQ_TLS_KEYSTORE_PEM": tls.server_pem(),
        }
    )
    return env


def _command(flavor: str, scram: str) -> list[str]:
    """Write the keystore, format the storage with the SCRAM users, run the image's entrypoint."""
    if flavor == "local":
        storage = 'java -Xmx128m -cp "/opt/kafka/libs/*" kafka.tools.StorageTool'
        props = "/opt/kafka/config/server.properties"
        entry = "/usr/local/bin/unimq-kafka"
    else:  # official apache/kafka image (best effort, not exercised on this project's CI)
        storage = "/opt/kafka/bin/kafka-storage.sh"
        props = "/opt/kafka/config/server.properties"
        entry = "/etc/kafka/docker/run"
    script = f"""set -e
umask 077
printf '%s' "$UNIMQ_TLS_KEYSTORE_PEM" > {_KEYSTORE}
unset UNIMQ_TLS_KEYSTORE_PEM
if [ ! -e /var/lib/kafka/data/meta.properties ]; then
  mkdir -p /var/lib/kafka/data
  {storage} format -t "$CLUSTER_ID" -c {props} --add-scram '{scram}'
fi
exec {entry}
"""
    return ["bash", "-c", script]


def start_secure_kafka(
    client: docker.DockerClient, version: str, *, primary: bool = True
) -> SecureKafkaBroker:
    image, source = config.image_for("kafka", version, primary=primary)
    flavor = ensure_image(client, image, source, "kafka", version)
    tls = make_server_tls(("127.0.0.1",))
    admin_password = secrets.token_hex(16)
    app_password = secrets.token_hex(16)
    scram = (
        f"SCRAM-SHA-512=[name=admin,password={admin_password}]"
        f"' --add-scram 'SCRAM-SHA-512=[name=app,password={app_password}]"
    )
    port = probes.free_loopback_port()
    c = _new_container("kafka-secure", image).with_loopback_port(9092, port)
    c.with_envs(**secure_kafka_env(port, flavor, tls))
    c.with_command(_command(flavor, scram))

    def ready(b: ContainerBroker) -> bool:
        return _metadata_ok(b)  # type: ignore[arg-type]

    h = SecureKafkaBroker(
        "kafka",
        f"kafka://{LOOPBACK}:{port}",
        image=image,
        flavor=flavor,
        container=c,
        ready=ready,
        start_timeout=config.start_timeout(),
        version=version,
    )
    h.tls, h.admin_password, h.app_password = tls, admin_password, app_password
    # the plain URL of the handle names the limited user: what the tests connect as
    _start(h)
    h.url = h.url_for("app", app_password)
    try:
        provision(h)
    except Exception:
        h.remove()
        raise
    return h


def _metadata_ok(h: SecureKafkaBroker) -> bool:
    from confluent_kafka.admin import AdminClient

    if not probes.tcp_open(h.host, h.port):
        return False
    admin = AdminClient({**h.admin_config(), "logger": _Quiet()})
    try:
        admin.list_topics(timeout=3)
        return True
    except Exception:
        return False


class _Quiet:
    """Swallow librdkafka's log lines while the broker is still starting."""

    def log(self, *_args: Any) -> None:
        pass


def provision(h: SecureKafkaBroker) -> None:
    """Create ``sec.readonly`` and the ``app`` user's ACLs as the super user."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        AdminClient,
        NewTopic,
        ResourcePatternType,
        ResourceType,
    )

    admin = AdminClient({**h.admin_config(), "logger": _Quiet()})
    allow = AclPermissionType.ALLOW
    bindings = []
    for prefix in TOPIC_PREFIXES:
        for op in (
            AclOperation.CREATE,
            AclOperation.DESCRIBE,
            AclOperation.READ,
            AclOperation.WRITE,
            AclOperation.DESCRIBE_CONFIGS,
        ):
            bindings.append(
                AclBinding(
                    ResourceType.TOPIC,
                    prefix,
                    ResourcePatternType.PREFIXED,
                    "User:app",
                    "*",
                    op,
                    allow,
                )
            )
    for prefix in GROUP_PREFIXES:
        for op in (AclOperation.READ, AclOperation.DESCRIBE, AclOperation.DELETE):
            bindings.append(
                AclBinding(
                    ResourceType.GROUP,
                    prefix,
                    ResourcePatternType.PREFIXED,
                    "User:app",
                    "*",
                    op,
                    allow,
                )
            )
    # sec.readonly: the prefix rule would allow writing; a DENY wins over any ALLOW
    bindings.append(
        AclBinding(
            ResourceType.TOPIC,
            READ_ONLY_TOPIC,
            ResourcePatternType.LITERAL,
            "User:app",
            "*",
            AclOperation.WRITE,
            AclPermissionType.DENY,
        )
    )
    for future in admin.create_acls(bindings, request_timeout=30).values():
        future.result(timeout=60)
    futures = admin.create_topics(
        [NewTopic(READ_ONLY_TOPIC, num_partitions=1, replication_factor=1)]
    )
    for future in futures.values():
        try:
            future.result(timeout=60)
        except KafkaException as exc:
            if "already exists" not in str(exc).lower():
                raise
    deadline = time.monotonic() + 30
    while READ_ONLY_TOPIC not in admin.list_topics(timeout=5).topics:
        if time.monotonic() > deadline:
            raise BrokerUnavailable(f"topic {READ_ONLY_TOPIC} did not appear on the secured kafka")
        time.sleep(0.1)
