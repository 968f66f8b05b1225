"""Transport options: what ``Broker("kafka://…", **options)`` accepts, validated up front.

Everything a user can configure ends up in one place, :class:`KafkaSettings`, so that the
rest of the adapter never looks at raw options. The librdkafka configuration dicts built
here contain the SASL password: they are never logged, printed or put in an error message
(``KafkaSettings.__repr__`` shows only the redacted URL).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from unimq.errors import ConfigurationError
from unimq.settings import positive_seconds
from unimq.url import BrokerURL

from . import security

DEFAULT_PORT = 9092
#: Largest body unimq lets through; topics it creates accept a little more (headers, batch).
MAX_MESSAGE_SIZE = 8 * 1024 * 1024
MAX_RECORD_BYTES = MAX_MESSAGE_SIZE + 256 * 1024

#: Delay tiers in seconds (see delay.py and docs/backends/kafka.md).
DEFAULT_DELAY_TIERS: tuple[float, ...] = (1.0, 5.0, 30.0, 300.0, 3600.0, 21600.0, 86400.0)

_SIMPLE = {
    "client_id": "client.id",
    "security_protocol": "security.protocol",
    "sasl_mechanism": "sasl.mechanism",
    "sasl_username": "sasl.username",
    "sasl_password": "sasl.password",
    "ssl_ca_location": "ssl.ca.location",
    "ssl_certificate_location": "ssl.certificate.location",
    "ssl_key_location": "ssl.key.location",
    "ssl_key_password": "ssl.key.password",
}
_DICTS = ("librdkafka", "librdkafka_producer", "librdkafka_consumer")
_OTHER = (
    "num_partitions",
    "replication_factor",
    "delay_tiers",
    "revoke_timeout",
    "ssl_verify",
    "transactional_id",
)
_FLAT_PREFIX = "librdkafka_"

#: librdkafka settings that would silently weaken unimq's guarantees.
_PROTECTED = frozenset(
    {
        "enable.auto.commit",
        "enable.auto.offset.store",
        "group.id",
        "enable.idempotence",
        "acks",
        "request.required.acks",
        "bootstrap.servers",
        "metadata.broker.list",
        "on_delivery",
        "error_cb",
        # Transactions use their own producer (transactions.py); see the transactional_id option.
        "transactional.id",
    }
)
_PROPERTY = re.compile(r"^[a-z][a-z0-9.]*$")
_TRANSACTIONAL_ID = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


@dataclass(frozen=True)
class KafkaSettings:
    """The validated configuration of one transport."""

    url: str  # redacted
    common: dict[str, Any] = field(repr=False)
    producer: dict[str, Any] = field(repr=False)
    consumer: dict[str, Any] = field(repr=False)
    num_partitions: int = 3
    replication_factor: int = -1  # the broker's default.replication.factor
    delay_tiers: tuple[float, ...] = DEFAULT_DELAY_TIERS
    revoke_timeout: float = 10.0
    transactional_id: str | None = None

    @property
    def username(self) -> str | None:
        """The SASL user, for messages that say who was refused."""
        name = self.common.get("sasl.username")
        return None if name is None else str(name)

    def producer_config(self) -> dict[str, Any]:
        return {**self.common, **self.producer}

    def consumer_config(self) -> dict[str, Any]:
        return {**self.common, **self.consumer}

    def admin_config(self) -> dict[str, Any]:
        return dict(self.common)


def parse_settings(url: BrokerURL, options: Mapping[str, Any]) -> KafkaSettings:
    """Build :class:`KafkaSettings` from the URL and the transport options."""
    shown = url.redacted()
    if not url.hosts:
        raise ConfigurationError(f"kafka URL {shown!r} names no broker: use kafka://host:port")
    options = {**url.query_dict(), **options}
    unknown = [
        name
        for name in options
        if name not in _SIMPLE
        and name not in _DICTS
        and name not in _OTHER
        and not name.startswith(_FLAT_PREFIX)
    ]
    if unknown:
        raise ConfigurationError(
            f"unknown kafka:// option(s) {', '.join(sorted(unknown))}; known: "
            f"{', '.join(sorted([*_SIMPLE, *_DICTS, *_OTHER]))}, and librdkafka_<property> "
            "(dots written as underscores, e.g. librdkafka_linger_ms=5)"
        )
    common: dict[str, Any] = {
        "bootstrap.servers": ",".join(
            f"[{h.host}]:{h.port or DEFAULT_PORT}"
            if ":" in h.host
            else f"{h.host}:{h.port or DEFAULT_PORT}"
            for h in url.hosts
        ),
        "client.id": "unimq",
        # Quick reconnects after a broker restart; librdkafka's defaults back off to 10 s.
        "reconnect.backoff.max.ms": 1000,
    }
    for option, prop in _SIMPLE.items():
        if option in options and options[option] is not None:
            common[prop] = str(options[option])
    if url.username is not None:
        common["sasl.username"] = url.username
        if url.password is not None:
            common["sasl.password"] = url.password.get_secret_value()
    if "sasl.username" in common:
        common.setdefault("sasl.mechanism", "PLAIN")
        common.setdefault("security.protocol", "SASL_PLAINTEXT")
    producer: dict[str, Any] = {}
    consumer: dict[str, Any] = {}
    _merge(common, _as_dict(options.get("librdkafka"), "librdkafka"), "librdkafka")
    for name, value in options.items():
        if name.startswith(_FLAT_PREFIX) and name not in _DICTS:
            prop = name[len(_FLAT_PREFIX) :].lower().replace("_", ".")
            _merge(common, {prop: value}, name)
    _merge(
        producer,
        _as_dict(options.get("librdkafka_producer"), "librdkafka_producer"),
        "librdkafka_producer",
    )
    _merge(
        consumer,
        _as_dict(options.get("librdkafka_consumer"), "librdkafka_consumer"),
        "librdkafka_consumer",
    )
    verify = security.parse_verify(options.get("ssl_verify", True))
    if security.uses_tls(common):
        # after the raw settings: they may turn verification off, which then gets the warning
        for prop, value in security.verification_defaults(verify).items():
            common.setdefault(prop, value)
    return KafkaSettings(
        url=shown,
        common=common,
        producer=producer,
        consumer=consumer,
        num_partitions=_positive_int(options.get("num_partitions", 3), "num_partitions"),
        replication_factor=_replication(options.get("replication_factor", -1)),
        delay_tiers=_tiers(options.get("delay_tiers", DEFAULT_DELAY_TIERS)),
        revoke_timeout=positive_seconds(options.get("revoke_timeout", 10.0), "revoke_timeout"),
        transactional_id=_transactional_id(options.get("transactional_id")),
    )


def _transactional_id(value: Any) -> str | None:
    """The transactional producer's id: keep it stable across restarts of one instance (and
    distinct between instances), so a restart fences the previous process's transaction."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _TRANSACTIONAL_ID.match(value):
        raise ConfigurationError(
            "transactional_id must be 1 to 200 characters of letters, digits, '.', '_' or '-', "
            f"got {value!r}"
        )
    return value


def _merge(target: dict[str, Any], extra: Mapping[str, Any], source: str) -> None:
    for prop, value in extra.items():
        if not isinstance(prop, str) or not _PROPERTY.match(prop):
            raise ConfigurationError(f"{source}: {prop!r} is not a librdkafka property name")
        if prop in _PROTECTED:
            raise ConfigurationError(
                f"{source}: {prop!r} cannot be overridden: unimq sets it to keep its delivery "
                "guarantees (durable publish, commits only after handling)"
            )
        target[prop] = value


def _as_dict(value: Any, name: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):  # from the environment: JSON
        try:
            value = json.loads(value)
        except ValueError:
            raise ConfigurationError(f"{name} must be a dict (or a JSON object string)") from None
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{name} must be a dict of librdkafka settings")
    return value


def _positive_int(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be a positive integer, got {value!r}") from None
    if number < 1 or isinstance(value, bool):
        raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
    return number


def _replication(value: Any) -> int:
    """``-1`` (the default): the broker's ``default.replication.factor``, so a 3-node cluster
    configured for RF 3 replicates unimq's retry, delay and dead-letter topics without a unimq
    option; a positive number overrides it."""
    if value == -1 and not isinstance(value, bool):
        return -1
    try:
        return _positive_int(value, "replication_factor")
    except ConfigurationError:
        raise ConfigurationError(
            f"replication_factor must be -1 (the broker's default) or a positive integer, "
            f"got {value!r}"
        ) from None


def _tiers(value: Any) -> tuple[float, ...]:
    items: Sequence[Any]
    if isinstance(value, str):
        items = [part for part in value.split(",") if part.strip()]
    elif isinstance(value, Sequence):
        items = value
    else:
        raise ConfigurationError(f"delay_tiers must be a list of seconds, got {value!r}")
    tiers = sorted({positive_seconds(item, "delay_tiers") for item in items})
    if not tiers:
        raise ConfigurationError("delay_tiers must name at least one tier")
    if tiers[0] > 1.0:
        raise ConfigurationError(
            "the smallest delay tier must be at most 1 second (it bounds how late a delayed "
            f"message may arrive), got {tiers[0]:g}"
        )
    return tuple(tiers)
