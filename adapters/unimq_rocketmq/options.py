"""Transport options: from the URL (``rocketmq://ak:sk@proxy:8081?namespace=prod``) and from
``Broker(url, **options)`` / ``UNIMQ_*`` settings, validated once, before anything connects.

Values may arrive as strings (URL query, environment), so every field is coerced here rather
than trusted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from unimq.errors import ConfigurationError
from unimq.url import BrokerURL

#: The proxy refuses delivery timestamps more than ``maxDelayTimeMills`` (default 1 day) ahead;
#: stay an hour below it so clock skew between client and proxy never trips it.
DEFAULT_MAX_DELAY = 24 * 3600.0 - 3600.0
#: The client and the default broker refuse bodies over 4 MiB.
MAX_BODY = 4 * 1024 * 1024

_KNOWN = {
    "namespace",
    "access_key",
    "secret_key",
    "tls",
    "tls_ca_file",
    "request_timeout",
    "invisible_duration",
    "await_duration",
    "batch_size",
    "auto_provision",
    "namesrv",
    "broker_addresses",
    "cluster",
    "queues",
    "provisioner",
    "max_delay",
    "topic_message_type",
    "release_delay",
    "transaction_topics",
    "transaction_check_timeout",
}


@dataclass(frozen=True)
class RocketMQOptions:
    endpoints: str
    namespace: str = ""
    access_key: str = ""
    secret_key: SecretStr = field(default_factory=lambda: SecretStr(""), repr=False)
    tls: bool = False
    tls_ca_file: str | None = None
    request_timeout: int = 5
    invisible_duration: int = 60
    await_duration: int = 5
    batch_size: int = 32
    auto_provision: bool = False
    namesrv: tuple[str, ...] = ()
    broker_addresses: tuple[str, ...] = ()
    cluster: str | None = None
    queues: int = 8
    provisioner: Callable[..., Any] | None = None
    max_delay: float = DEFAULT_MAX_DELAY
    topic_message_type: str = "DELAY"
    release_delay: int = 0
    transaction_topics: tuple[str, ...] = ()
    transaction_check_timeout: float = 10.0

    @classmethod
    def parse(cls, url: BrokerURL, options: Mapping[str, Any]) -> RocketMQOptions:
        merged: dict[str, Any] = {**url.query_dict(), **options}
        unknown = sorted(set(merged) - _KNOWN)
        if unknown:
            raise ConfigurationError(
                f"unknown rocketmq:// option(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(_KNOWN))}"
            )
        if not url.hosts:
            raise ConfigurationError(
                f"{url.redacted()}: name the gRPC proxy, e.g. rocketmq://127.0.0.1:8081"
            )
        endpoints = ";".join(f"{host.host}:{host.port or 8081}" for host in url.hosts)
        secret = merged.get("secret_key")
        if secret is None and url.password is not None:
            secret = url.password.get_secret_value()
        message_type = str(merged.get("topic_message_type", "DELAY")).upper()
        if message_type not in ("DELAY", "MIXED"):
            raise ConfigurationError("topic_message_type must be DELAY or MIXED")
        provisioner = merged.get("provisioner")
        if provisioner is not None and not callable(provisioner):
            raise ConfigurationError("provisioner must be a callable (kind, name, **attrs)")
        parsed = cls(
            endpoints=endpoints,
            namespace=str(merged.get("namespace") or url.path.strip("/") or ""),
            access_key=str(merged.get("access_key") or url.username or ""),
            secret_key=secret if isinstance(secret, SecretStr) else SecretStr(str(secret or "")),
            tls=_bool(merged.get("tls", False), "tls"),
            tls_ca_file=str(merged["tls_ca_file"]) if merged.get("tls_ca_file") else None,
            request_timeout=_int(merged.get("request_timeout", 5), "request_timeout", 1),
            invisible_duration=_int(merged.get("invisible_duration", 60), "invisible_duration", 10),
            await_duration=_int(merged.get("await_duration", 5), "await_duration", 5),
            batch_size=_int(merged.get("batch_size", 32), "batch_size", 1),
            auto_provision=_bool(merged.get("auto_provision", False), "auto_provision"),
            namesrv=_addresses(merged.get("namesrv")),
            broker_addresses=_addresses(merged.get("broker_addresses")),
            cluster=str(merged["cluster"]) if merged.get("cluster") else None,
            queues=_int(merged.get("queues", 8), "queues", 1),
            provisioner=provisioner,
            max_delay=float(merged.get("max_delay", DEFAULT_MAX_DELAY)),
            topic_message_type=message_type,
            release_delay=_int(merged.get("release_delay", 0), "release_delay", 0),
            transaction_topics=_addresses(merged.get("transaction_topics")),
            transaction_check_timeout=_float(
                merged.get("transaction_check_timeout", 10.0), "transaction_check_timeout"
            ),
        )
        if parsed.auto_provision and not (parsed.namesrv or parsed.broker_addresses):
            raise ConfigurationError(
                "auto_provision=true needs namesrv=host:port (or broker_addresses=host:port): "
                "the gRPC proxy cannot create topics, the name server/broker admin port can"
            )
        if parsed.max_delay <= 0:
            raise ConfigurationError("max_delay must be positive (seconds)")
        return parsed


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigurationError(f"option {name} must be true or false, not {value!r}")


def _int(value: Any, name: str, minimum: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"option {name} must be an integer, not {value!r}") from None
    if number < minimum:
        raise ConfigurationError(f"option {name} must be at least {minimum}, not {number}")
    return number


def _float(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"option {name} must be a number, not {value!r}") from None
    if not number > 0:
        raise ConfigurationError(f"option {name} must be positive (seconds), not {number}")
    return number


def _addresses(value: Any) -> tuple[str, ...]:
    if not value:
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.replace(";", ",").split(",") if part.strip())
    return tuple(str(part) for part in value)
