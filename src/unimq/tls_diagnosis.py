"""Say *why* a connection to a broker fails at the TLS layer, in words a user can act on.

Client libraries report a TLS failure in their own terms, and some not at all: librdkafka
prints "certificate verify failed" both for an untrusted certificate and for a certificate that
names another host, and a plaintext client talking to a TLS listener (or the reverse) only sees
the connection close, which looks like a broker that is down. An adapter whose connection
attempt fails calls :func:`diagnose` with what the client was configured to do; it makes one or
two short handshakes of its own with the standard library's :mod:`ssl` and returns a sentence
naming the problem (untrusted certificate, wrong host name, TLS port used without TLS,
plaintext port used with TLS), or ``None`` when TLS is not the problem (the broker is down,
the credentials are wrong, ...). It never raises and never takes longer than its timeout per
handshake; it only reads certificate paths, never a password or key passphrase, except to
load the client certificate the real client would present.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field

#: OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH.
_NAME_MISMATCH = frozenset({62, 64})


@dataclass(frozen=True)
class TLSProbe:
    """What the real client was told to do, for :func:`diagnose` to repeat."""

    host: str
    port: int
    use_tls: bool
    ca_file: str | None = None  # None: the system's trust store
    verify: bool = True
    check_hostname: bool = True
    cert_file: str | None = None
    key_file: str | None = None
    key_password: str | None = field(default=None, repr=False)
    timeout: float = 2.0


def diagnose(probe: TLSProbe) -> str | None:
    """A sentence naming the TLS problem between this client and ``probe.host:port``, or
    ``None`` when there is none (or the broker cannot be reached at all)."""
    try:
        if probe.use_tls:
            return _diagnose_tls_client(probe)
        return _diagnose_plain_client(probe)
    except Exception:  # a diagnosis must never replace the error it explains
        return None


def _connect(probe: TLSProbe) -> socket.socket | None:
    try:
        return socket.create_connection((probe.host, probe.port), timeout=probe.timeout)
    except OSError:
        return None


def _handshake(probe: TLSProbe, context: ssl.SSLContext) -> ssl.SSLSocket | None:
    raw = _connect(probe)
    if raw is None:
        return None
    try:
        return context.wrap_socket(raw, server_hostname=probe.host)
    except BaseException:
        raw.close()
        raise


def _diagnose_plain_client(probe: TLSProbe) -> str | None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        tls = _handshake(probe, context)
    except (ssl.SSLError, OSError):
        return None  # not a TLS listener either: the problem is elsewhere
    if tls is None:
        return None
    tls.close()
    return (
        f"{probe.host}:{probe.port} is a TLS port but the client connects without TLS "
        "(plaintext client on a TLS port): turn TLS on in the client"
    )


def _context(probe: TLSProbe, *, check_hostname: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=probe.ca_file)
    context.check_hostname = check_hostname
    if probe.cert_file:
        context.load_cert_chain(probe.cert_file, probe.key_file, probe.key_password)
    return context


def _diagnose_tls_client(probe: TLSProbe) -> str | None:
    trust = f"the CA file {probe.ca_file}" if probe.ca_file else "the system's trust store"
    if not probe.verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = _context(probe, check_hostname=False)
    try:
        tls = _handshake(probe, context)
    except ssl.SSLCertVerificationError as exc:
        return (
            f"TLS: the certificate of {probe.host}:{probe.port} is not trusted by {trust} "
            f"({exc.verify_message}): untrusted certificate; give the CA that signed it"
        )
    except (ssl.SSLError, ConnectionError, OSError) as exc:
        if isinstance(exc, ssl.SSLError) and "CERTIFICATE" in str(exc).upper():
            return None  # the server refused *our* certificate: not a plaintext listener
        return (
            f"{probe.host}:{probe.port} does not speak TLS (the connection broke during the TLS "
            f"handshake: {type(exc).__name__}): TLS client on a plaintext port; turn TLS off "
            "in the client or use the broker's TLS port"
        )
    if tls is None:
        return None
    tls.close()
    if not probe.verify or not probe.check_hostname:
        return None
    try:
        tls = _handshake(probe, _context(probe, check_hostname=True))
    except ssl.SSLCertVerificationError as exc:
        if exc.verify_code in _NAME_MISMATCH:
            return (
                f"TLS: the certificate of {probe.host}:{probe.port} does not name the host "
                f"{probe.host!r} ({exc.verify_message}): wrong host name; connect through a "
                "name the certificate lists"
            )
        where = f"{probe.host}:{probe.port}"
        return f"TLS: the certificate of {where} failed verification: {exc.verify_message}"
    except (ssl.SSLError, OSError):
        return None
    if tls is not None:
        tls.close()
    return None
