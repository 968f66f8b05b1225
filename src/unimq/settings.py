"""Configuration from the environment: ``UNIMQ_URL`` plus ``UNIMQ_``-prefixed options.

The same application module runs unchanged when only ``UNIMQ_URL`` changes. Options unimq
knows (``UNIMQ_CONNECT_TIMEOUT``, ``UNIMQ_GRACEFUL_TIMEOUT``, ``UNIMQ_IDEMPOTENCY_STORE``,
``UNIMQ_IDEMPOTENCY_LEASE``, ``UNIMQ_INSTANCE_ID``) are validated here. Transport options are
scoped by adapter: ``UNIMQ_<ADAPTER>_<OPTION>`` (``UNIMQ_RABBITMQ_HEARTBEAT=30``,
``UNIMQ_KAFKA_CLIENT_ID=orders``) reaches the transport as option ``<option>`` (lower-case)
only when ``UNIMQ_URL`` selects that adapter, so one environment can carry the settings of
several backends. Other ``UNIMQ_*`` variables are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigurationError

PREFIX = "UNIMQ_"


class CoreSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", case_sensitive=False)

    url: SecretStr | None = None
    connect_timeout: float = Field(10.0, gt=0, allow_inf_nan=False)
    graceful_timeout: float = Field(30.0, gt=0, allow_inf_nan=False)
    idempotency_store: str | None = None
    idempotency_lease: float = Field(300.0, gt=0, allow_inf_nan=False)
    instance_id: str | None = None


_CORE = set(CoreSettings.model_fields)


def options_from_env(
    environ: Mapping[str, str], default_url: str | None = None, adapter: str | None = None
) -> tuple[str, dict[str, Any]]:
    """``(url, options)`` for ``Broker``; ``adapter`` names the transport whose
    ``UNIMQ_<ADAPTER>_*`` variables become options (default: the registered adapter of the
    URL's scheme)."""
    scoped = {k: v for k, v in environ.items() if k.upper().startswith(PREFIX)}
    try:
        settings = CoreSettings.model_validate(
            {
                k[len(PREFIX) :].lower(): v
                for k, v in scoped.items()
                if k[len(PREFIX) :].lower() in _CORE
            }
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{PREFIX}{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise ConfigurationError(f"invalid unimq settings in the environment: {problems}") from None
    url = settings.url.get_secret_value() if settings.url is not None else default_url
    if not url:
        raise ConfigurationError(
            "UNIMQ_URL is not set; set it (e.g. UNIMQ_URL=memory:// or amqp://user:pass@host/) "
            "or pass default_url to Broker.from_env()"
        )
    options: dict[str, Any] = {}
    for field in ("connect_timeout", "graceful_timeout", "idempotency_lease"):
        if f"{PREFIX}{field.upper()}" in {k.upper() for k in scoped}:
            options[field] = getattr(settings, field)
    if settings.idempotency_store:
        options["idempotency_store"] = settings.idempotency_store
    if settings.instance_id:
        options["instance_id"] = settings.instance_id
    if adapter is None:
        adapter = _adapter_of(url)
    if adapter:
        own = f"{PREFIX}{adapter.upper()}_"
        for name, value in scoped.items():
            if name.upper().startswith(own) and len(name) > len(own):
                options[name[len(own) :].lower()] = value
    return url, options


def _adapter_of(url: str) -> str | None:
    from .errors import UnknownSchemeError
    from .plugins import transport_registry

    scheme = url.split("://", 1)[0] if "://" in url else ""
    try:
        return transport_registry().get(scheme).name if scheme else None
    except UnknownSchemeError:
        return None  # Broker() reports it, with the installed schemes


def positive_seconds(value: Any, name: str) -> float:
    """``value`` as a positive number of seconds, or a :class:`ConfigurationError` naming
    ``name``: the one check for every timeout-like option (the core's and the adapters')."""
    try:
        number = math.nan if isinstance(value, bool) else float(value)  # True is not 1 second
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    # "not number > 0" rather than "number <= 0": NaN compares false with everything, and an
    # infinite timeout means "wait forever", which is what a timeout exists to prevent.
    if not (number > 0 and math.isfinite(number)):
        raise ConfigurationError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return number
