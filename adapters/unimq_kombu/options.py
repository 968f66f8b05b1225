"""The ``Broker(...)`` options (and ``UNIMQ_<NAME>`` variables) the kombu adapter takes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from unimq.errors import ConfigurationError


@dataclass(frozen=True)
class KombuOptions:
    """``visibility_timeout``: seconds before Redis/SQS hands an unacked message to another
    consumer (a worker that died without acking). ``poll_interval``: how long a consumer
    thread waits for broker events before it runs queued acks. ``region``: the SQS region.
    ``secure``: use HTTPS to the SQS endpoint (``false`` for a local ElasticMQ).
    ``wait_time_seconds``: SQS long polling (0-20). The consumer thread runs acks between
    polls, so with long polling an ack can wait that long while the queue is empty; the
    default 0 polls every ``poll_interval`` instead (more requests, prompt acks).
    ``publish_connections``: publishing connections, each on its own thread (1 for Redis,
    4 for SQS, where each send is an HTTP round trip)."""

    visibility_timeout: float = 60.0
    poll_interval: float = 0.05
    region: str = "us-east-1"
    secure: bool = True
    wait_time_seconds: int = 0
    publish_connections: int = 1


def _number(name: str, value: Any, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"kombu option {name} must be a number, got {value!r}") from None
    if not low <= number <= high:
        raise ConfigurationError(f"kombu option {name} must be in [{low}, {high}], got {number}")
    return number


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"kombu option {name} must be true or false, got {value!r}")


def parse_options(options: Mapping[str, Any], publish_connections: int = 1) -> KombuOptions:
    known = {
        "visibility_timeout",
        "poll_interval",
        "region",
        "secure",
        "wait_time_seconds",
        "publish_connections",
    }
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigurationError(
            f"unknown kombu option(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    defaults = KombuOptions()
    return KombuOptions(
        visibility_timeout=_number(
            "visibility_timeout",
            options.get("visibility_timeout", defaults.visibility_timeout),
            1,
            43200,
        ),
        poll_interval=_number(
            "poll_interval", options.get("poll_interval", defaults.poll_interval), 0.005, 5
        ),
        region=str(options.get("region", defaults.region)),
        secure=_flag("secure", options.get("secure", defaults.secure)),
        wait_time_seconds=int(
            _number("wait_time_seconds", options.get("wait_time_seconds", 0), 0, 20)
        ),
        publish_connections=int(
            _number(
                "publish_connections",
                options.get("publish_connections", publish_connections),
                1,
                32,
            )
        ),
    )
