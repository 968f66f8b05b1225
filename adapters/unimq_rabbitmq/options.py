"""RabbitMQ connection options: from ``Broker(url, **options)`` or ``UNIMQ_RABBITMQ_*``."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from unimq.errors import ConfigurationError
from unimq.url import BrokerURL

DEFAULT_PORT = {"amqp": 5672, "amqps": 5671}


class RabbitMQOptions(BaseModel):
    """Options of the ``amqp://``/``amqps://`` transport (all optional).

    - ``heartbeat``: AMQP heartbeat in seconds (RabbitMQ's default 60 when unset).
    - ``connection_name``: shown in the management UI (default ``unimq-<instance id>``).
    - ``ca_file`` / ``cert_file`` / ``key_file``: TLS (``amqps://``) trust and client cert.
    - ``verify_tls``: verify the server certificate (default true).
    - ``publish_window``: publisher confirms in flight per connection (pipelined publishing).
    - ``reconnect_interval``: seconds between reconnect attempts after a connection loss.
    - ``publish_timeout``: the longest a publish waits (for a window slot, a lost connection
      and the broker's confirm together) before it raises ``PublishError``; also how long
      ``lag`` and a dead-letter session wait for a lost connection to come back.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    heartbeat: int | None = Field(None, ge=0)
    connection_name: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify_tls: bool = True
    publish_window: int = Field(256, ge=1)
    reconnect_interval: float = Field(2.0, gt=0)
    publish_timeout: float = Field(30.0, gt=0)

    @classmethod
    def parse(cls, url: BrokerURL, options: Mapping[str, Any]) -> RabbitMQOptions:
        merged = {**url.query_dict(), **options}
        try:
            return cls.model_validate(merged)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
                for error in exc.errors()
            )
            raise ConfigurationError(
                f"invalid RabbitMQ options for {url.redacted()}: {problems} (known options: "
                f"{', '.join(sorted(cls.model_fields))})"
            ) from None

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        if not self.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context
