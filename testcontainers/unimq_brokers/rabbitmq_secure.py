"""A RabbitMQ test broker with security on: TLS, passwords, client certificates, permissions.

The same image as the plain broker (``unimq-test/rabbitmq``: Debian's ``rabbitmq-server``
ships the ``rabbitmq_auth_mechanism_ssl`` plugin); what makes it secure is mounted at start
from a temporary directory written here: a throwaway CA and certificates (:mod:`.tls`), a
config file for ``/etc/rabbitmq/conf.d``, the enabled-plugins file and a definitions file
with the users, the virtual host and the permissions. Nothing secret is committed: the
passwords are random per session.

Listeners (both published on 127.0.0.1 only): plaintext AMQP on 5672 and AMQPS on 5671. The
server certificate names ``localhost`` only, so ``amqps://…@localhost:PORT`` verifies and
``amqps://…@127.0.0.1:PORT`` is the wrong host name.

Virtual hosts: :data:`VHOST` and :data:`OTHER_VHOST` (``app`` only). There is no ``/`` and no
``guest``: RabbitMQ creates neither when it imports definitions on its first boot.

Identities, all in virtual host :data:`VHOST`:

- ``app`` (password): every permission; the conformance smoke subset runs as this user.
- :data:`CERT_USER` (no password): authenticates with its client certificate through the
  EXTERNAL mechanism (user name = the certificate's common name); every permission.
- ``scoped`` (password): may configure and read ``unimq*`` and ``allowed.*`` (so it can
  subscribe to topics named ``allowed.…``), may write only the delay ladder and ``allowed.*``
  queues: it cannot publish (no write on the ``unimq`` exchange) and cannot subscribe to any
  other topic (no configure on its queue).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
from urllib.parse import quote

import docker

from unimq.url import redact

from . import config, probes
from .containers import (
    LOOPBACK,
    ContainerBroker,
    _new_container,
    _start,
    ensure_image,
)
from .tls import SERVER_NAME, CertificateFiles, make_certificates

VHOST = "unimq-secure"
OTHER_VHOST = "unimq-other"  # exists; only ``app`` may use it
CERT_USER = "unimq-cert-client"
MOUNT = "/etc/unimq-secure"
SCOPED_PREFIX = "allowed."

_CONF = f"""\
# unimq secured test broker (testcontainers/unimq_brokers/rabbitmq_secure.py)
listeners.ssl.default = 5671
ssl_options.cacertfile = {MOUNT}/ca.pem
ssl_options.certfile = {MOUNT}/server.pem
ssl_options.keyfile = {MOUNT}/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
auth_mechanisms.1 = PLAIN
auth_mechanisms.2 = AMQPLAIN
auth_mechanisms.3 = EXTERNAL
ssl_cert_login_from = common_name
load_definitions = {MOUNT}/definitions.json
"""


def password_hash(password: str) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256``: base64(salt + sha256(salt + password))."""
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def definitions(passwords: dict[str, str]) -> dict[str, object]:
    """Users, the virtual host and the permissions (see the module docstring)."""
    scoped = r"^(unimq(\..*)?|allowed\..*)$"
    users = [
        {
            "name": name,
            "password_hash": password_hash(pw) if pw else "",
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": [],
        }
        for name, pw in {**passwords, CERT_USER: ""}.items()
    ]
    everything = {"configure": ".*", "write": ".*", "read": ".*"}
    return {
        "users": users,
        "vhosts": [{"name": VHOST}, {"name": OTHER_VHOST}],
        "permissions": [
            {"user": "app", "vhost": OTHER_VHOST, **everything},
            {"user": "app", "vhost": VHOST, **everything},
            {"user": CERT_USER, "vhost": VHOST, **everything},
            {
                "user": "scoped",
                "vhost": VHOST,
                "configure": scoped,
                "write": r"^(unimq\.delay\..*|allowed\..*)$",
                "read": scoped,
            },
        ],
    }


class SecureRabbitMQ(ContainerBroker):
    """The secured broker's handle. ``url`` is the ``app`` user over TLS; :meth:`amqp_url`
    builds any other combination."""

    certs: CertificateFiles
    passwords: dict[str, str]
    tls_port: int
    plain_port: int

    def amqp_url_for(
        self,
        user: str | None = "app",
        password: str | None = None,
        *,
        tls: bool = True,
        host: str = SERVER_NAME,
        port: int | None = None,
        vhost: str = VHOST,
    ) -> str:
        """A URL for ``user`` (its own password unless ``password`` is given) on the TLS or the
        plaintext listener (``port`` overrides, for the wrong-port cases)."""
        scheme = "amqps" if tls else "amqp"
        if port is None:
            port = self.tls_port if tls else self.plain_port
        userinfo = ""
        if user is not None:
            pw = self.passwords.get(user, "") if password is None else password
            userinfo = quote(user, safe="") + (":" + quote(pw, safe="") if pw else "") + "@"
        return f"{scheme}://{userinfo}{host}:{port}/{quote(vhost, safe='')}"

    def __repr__(self) -> str:  # the URL holds a (throwaway) password: the report shows repr
        return f"<SecureRabbitMQ {redact(self.url)} version={self.version}>"

    def remove(self) -> None:
        super().remove()
        shutil.rmtree(self.certs.directory, ignore_errors=True)


def start_rabbitmq_secure(
    client: docker.DockerClient, version: str, *, primary: bool = True
) -> SecureRabbitMQ:
    image, source = config.image_for("rabbitmq", version, primary=primary)
    flavor = ensure_image(client, image, source, "rabbitmq", version)
    certs = make_certificates(CERT_USER)
    passwords = {"app": "app-" + secrets.token_hex(8), "scoped": "sc-" + secrets.token_hex(8)}
    d = certs.directory
    (d / "definitions.json").write_text(json.dumps(definitions(passwords)))
    (d / "unimq-secure.conf").write_text(_CONF)
    (d / "enabled_plugins").write_text("[rabbitmq_auth_mechanism_ssl].\n")
    for path in d.iterdir():
        os.chmod(path, 0o644)
    plain_port, tls_port = probes.free_loopback_port(), probes.free_loopback_port()
    c = (
        _new_container("rabbitmq", image)
        .with_loopback_port(5672, plain_port)
        .with_loopback_port(5671, tls_port)
    )
    c.with_volume_mapping(str(d), MOUNT, "ro")
    c.with_volume_mapping(
        str(d / "unimq-secure.conf"), "/etc/rabbitmq/conf.d/50-unimq-secure.conf", "ro"
    )
    c.with_env("RABBITMQ_ENABLED_PLUGINS_FILE", f"{MOUNT}/enabled_plugins")
    h = SecureRabbitMQ(
        "rabbitmq",
        "",
        image=image,
        flavor=flavor,
        container=c,
        ready=lambda b: (
            probes.amqp_tls_ready(LOOPBACK, tls_port, str(certs.ca_file), SERVER_NAME)
            and probes.amqp_ready(LOOPBACK, plain_port)
        ),
        start_timeout=config.start_timeout(),
        version=version,
    )
    h.certs, h.passwords, h.tls_port, h.plain_port = certs, passwords, tls_port, plain_port
    h.url = h.amqp_url_for("app")
    h.host, h.port = SERVER_NAME, tls_port
    try:
        return _start(h)  # type: ignore[return-value]
    except BaseException:
        h.remove()
        raise
