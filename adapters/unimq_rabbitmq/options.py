"""RabbitMQ connection options: from ``Broker(url, **options)`` or ``UNIMQ_RABBITMQ_*``."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from unimq.errors import ConfigurationError
from unimq.url import BrokerURL

DEFAULT_PORT = {"amqp": 5672, "amqps": 5671}


class RabbitMQOptions(BaseModel):
    """Options of the ``amqp://``/``amqps://`` transport (all optional).

    - ``heartbeat``: AMQP heartbeat in seconds (RabbitMQ's default 60 when unset).
    - ``connection_name``: shown in the management UI (default ``unimq-<instance id>``).
    - ``ca_file`` / ``cert_file`` / ``key_file``: TLS (``amqps://``) trust and client cert;
      without ``ca_file`` the system's trust store verifies the server.
    - ``key_password``: passphrase of an encrypted ``key_file`` (a secret: never shown).
    - ``verify_tls``: verify the server certificate and its host name (default true; false
      logs a warning at connect).
    - ``auth_mechanism``: ``plain`` (user and password from the URL) or ``external`` (the
      client certificate is the identity; needs ``amqps://`` and ``cert_file``).
    - ``publish_window``: publisher confirms in flight per connection (pipelined publishing).
    - ``reconnect_interval``: seconds between reconnect attempts after a connection loss.
    - ``publish_timeout``: the longest a publish waits (for a window slot, a lost connection
      and the broker's confirm together) before it raises ``PublishError``; also how long
      ``lag`` and a dead-letter session wait for a lost connection to come back.
    - ``queue_type``: ``quorum`` (default) or ``classic``, for every durable queue unimq
      declares (group queues, dead-letter holding queues, the delay ladder). Quorum queues are
      RabbitMQ's replicated type (4.0 removed classic mirroring) and dead-letter at least once,
      so delays and retries survive a node crash; ``classic`` opts out, for brokers older than
      3.10 or queues declared as classic by an earlier unimq (a queue's type cannot change in
      place). Broadcast queues are always classic: they are exclusive, and quorum queues
      cannot be. ``stream``: every group queue is a RabbitMQ stream (an append-only log read
      from an offset), so a group keeps its position and can be rewound (``Broker.rewind``);
      the delay ladder and dead-letter holding queues stay quorum queues (a stream has no TTL
      or dead-lettering). See :mod:`unimq_rabbitmq.stream` and docs/backends/rabbitmq.md
      ("Stream queues") for what differs.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    heartbeat: int | None = Field(None, ge=0)
    connection_name: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    key_password: SecretStr | None = None
    verify_tls: bool = True
    auth_mechanism: Literal["plain", "external"] = "plain"
    publish_window: int = Field(256, ge=1)
    reconnect_interval: float = Field(2.0, gt=0)
    publish_timeout: float = Field(30.0, gt=0)
    queue_type: Literal["quorum", "classic", "stream"] = "quorum"

    @classmethod
    def parse(cls, url: BrokerURL, options: Mapping[str, Any]) -> RabbitMQOptions:
        merged = {**url.query_dict(), **options}
        if isinstance(merged.get("auth_mechanism"), str):
            merged["auth_mechanism"] = merged["auth_mechanism"].lower()
        if isinstance(merged.get("queue_type"), str):
            merged["queue_type"] = merged["queue_type"].lower()
        try:
            parsed = cls.model_validate(merged)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
                for error in exc.errors()
            )
            raise ConfigurationError(
                f"invalid RabbitMQ options for {url.redacted()}: {problems} (known options: "
                f"{', '.join(sorted(cls.model_fields))})"
            ) from None
        if parsed.auth_mechanism == "external" and (url.scheme != "amqps" or not parsed.cert_file):
            raise ConfigurationError(
                f"auth_mechanism=external for {url.redacted()} needs amqps:// and cert_file "
                "(the client certificate is the identity)"
            )
        return parsed

    def ssl_context(self) -> ssl.SSLContext:
        """The client's TLS context: the CA from ``ca_file``, else the system's trust store;
        the host name checked unless ``verify_tls`` is false. Raises ``ConfigurationError``
        for a file that cannot be read or a key that cannot be decrypted (never a prompt on
        the terminal: an encrypted key without ``key_password`` is an error, not a hang)."""
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"cannot read ca_file {self.ca_file!r}: {exc.strerror or exc}"
            ) from None
        if self.cert_file:
            try:
                context.load_cert_chain(self.cert_file, self.key_file, password=self._passphrase)
            except _NoPassphrase:
                raise ConfigurationError(
                    f"key_file {self.key_file or self.cert_file!r} is encrypted: set key_password"
                ) from None
            except ssl.SSLError:
                raise ConfigurationError(
                    f"cannot load the client certificate {self.cert_file!r} with key "
                    f"{self.key_file or self.cert_file!r}: wrong key_password, or the key does "
                    "not match the certificate"
                ) from None
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot read the client certificate or key ({self.cert_file!r}, "
                    f"{self.key_file!r}): {exc.strerror or exc}"
                ) from None
        if not self.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _passphrase(self) -> bytes:
        """OpenSSL asks for this only when the key is encrypted."""
        if self.key_password is None:
            raise _NoPassphrase
        return self.key_password.get_secret_value().encode()


class _NoPassphrase(Exception):
    """The key is encrypted and no ``key_password`` was given."""
