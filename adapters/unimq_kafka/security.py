"""TLS verification settings of the Kafka transport, and the TLS diagnosis of a failed connect.

Verification is on whenever TLS is (``security_protocol`` ``SSL`` or ``SASL_SSL``): the broker's
certificate must chain to the CA of ``ssl_ca_location`` (or the system's trust store) and name
the host the client connects to (librdkafka ``ssl.endpoint.identification.algorithm=https``).
Those are set explicitly rather than left to librdkafka's defaults, which changed between
releases. Turning verification off takes an explicit ``ssl_verify=false``, and is logged as a
warning once per process and URL, also when done through raw ``librdkafka_*`` settings.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from unimq.errors import ConfigurationError
from unimq.tls_diagnosis import TLSProbe

logger = logging.getLogger("unimq.kafka")

TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
_FALSE = frozenset({"false", "0", "no", "off"})
_TRUE = frozenset({"true", "1", "yes", "on"})

_warned: set[str] = set()
_warned_lock = threading.Lock()


def parse_verify(value: Any) -> bool:
    """``ssl_verify``: a bool, or its text form from a URL query or the environment."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigurationError(f"ssl_verify must be true or false, got {value!r}")


def uses_tls(config: Mapping[str, Any]) -> bool:
    return str(config.get("security.protocol", "PLAINTEXT")).upper() in TLS_PROTOCOLS


def verification_defaults(verify: bool) -> dict[str, Any]:
    """The librdkafka settings of ``ssl_verify`` (merged before raw ``librdkafka_*`` ones)."""
    if verify:
        return {
            "enable.ssl.certificate.verification": True,
            "ssl.endpoint.identification.algorithm": "https",
        }
    return {
        "enable.ssl.certificate.verification": False,
        "ssl.endpoint.identification.algorithm": "none",
    }


def verifies_certificate(config: Mapping[str, Any]) -> bool:
    return str(config.get("enable.ssl.certificate.verification", True)).lower() not in _FALSE


def checks_host_name(config: Mapping[str, Any]) -> bool:
    return str(config.get("ssl.endpoint.identification.algorithm", "https")).lower() != "none"


def warn_if_unverified(config: Mapping[str, Any], url: str) -> None:
    """Log once per process and URL that this TLS connection does not verify the broker."""
    if not uses_tls(config):
        return
    off = [
        what
        for what, on in (
            ("certificate verification", verifies_certificate(config)),
            ("host name check", checks_host_name(config)),
        )
        if not on
    ]
    if not off:
        return
    with _warned_lock:
        if url in _warned:
            return
        _warned.add(url)
    logger.warning(
        "kafka %s: TLS %s turned off: the connection is encrypted but anyone who can "
        "intercept it can pose as the broker; use ssl_ca_location instead (docs/security.md)",
        url,
        " and ".join(off),
    )


def tls_probe(config: Mapping[str, Any], timeout: float = 2.0) -> TLSProbe | None:
    """What :func:`unimq.tls_diagnosis.diagnose` should repeat for the first bootstrap server."""
    first = str(config.get("bootstrap.servers", "")).split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        return None
    host = host.strip("[]")
    tls = uses_tls(config)
    return TLSProbe(
        host=host,
        port=int(port),
        use_tls=tls,
        ca_file=_text(config.get("ssl.ca.location")),
        verify=verifies_certificate(config),
        check_hostname=checks_host_name(config),
        cert_file=_text(config.get("ssl.certificate.location")),
        key_file=_text(config.get("ssl.key.location")),
        key_password=_text(config.get("ssl.key.password")),
        timeout=timeout,
    )


def _text(value: Any) -> str | None:
    if value is None or value == "" or value == "probe":
        return None
    return str(value)
