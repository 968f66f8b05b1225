"""TLS of the gRPC channel to the proxy: which CA it trusts, and why a handshake failed.

rocketmq-python-client opens its TLS channels with ``grpc.ssl_channel_credentials()`` and no
arguments, so the certificate is always verified, host name included, against gRPC's default
roots; it offers neither a CA option nor a way to turn verification off. gRPC reads its default
roots from ``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH`` once per process, when the first TLS channel
is made: ``tls_ca_file`` points that variable at a bundle of the CA files asked for so far
(plus the file it named before, if any), and refuses a new CA once a TLS channel exists (gRPC
would silently ignore it) with a :class:`~unimq.errors.ConfigurationError`.

Before the client starts, :func:`preflight` makes one TLS handshake of its own with the same
CA (``unimq.tls_diagnosis``), so an untrusted certificate, a certificate for another host or a
plaintext port is a :class:`~unimq.errors.TLSError` saying which, not a gRPC "unavailable".
"""

from __future__ import annotations

import os
import tempfile
import threading

from unimq.errors import ConfigurationError, TLSError
from unimq.tls_diagnosis import TLSProbe, diagnose

ROOTS_ENV = "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"
_lock = threading.Lock()


_trusted: list[str] = []
_frozen = False


def use_ca_file(path: str) -> None:
    """Make gRPC trust the CA certificates in ``path`` (PEM) as well."""
    global _frozen
    if not os.path.isfile(path):
        raise ConfigurationError(f"tls_ca_file {path!r} is not a readable file")
    wanted = os.path.realpath(path)
    with _lock:
        if wanted in _trusted:
            return
        if _frozen:
            raise ConfigurationError(
                f"tls_ca_file {path!r}: this process already opened a TLS channel with other "
                f"roots, and gRPC reads them once ({ROOTS_ENV}); put every CA certificate in "
                "one PEM file and name that one everywhere"
            )
        # what gRPC would have trusted (the bundle of earlier calls, or the user's own file)
        parts = [os.environ[ROOTS_ENV]] if os.environ.get(ROOTS_ENV) else []
        with tempfile.NamedTemporaryFile(
            "w", prefix="unimq-grpc-roots-", suffix=".pem", delete=False
        ) as bundle:
            for part in [*parts, wanted]:
                with open(part) as source:
                    bundle.write(source.read().rstrip("\n") + "\n")
        _trusted.append(wanted)
        os.environ[ROOTS_ENV] = bundle.name


def freeze() -> None:
    """A TLS channel exists now: gRPC has read its roots."""
    global _frozen
    _frozen = True


def probe(endpoints: str, *, tls: bool, ca_file: str | None, timeout: float) -> TLSProbe:
    """The handshake :func:`diagnose` repeats: the first endpoint, as the client sees it."""
    first = endpoints.split(";")[0]
    host, _, port = first.rpartition(":")
    return TLSProbe(
        host=host.strip("[]"),
        port=int(port),
        use_tls=tls,
        ca_file=ca_file or os.environ.get(ROOTS_ENV),
        timeout=timeout,
    )


def preflight(endpoints: str, *, ca_file: str | None, timeout: float, url: str) -> None:
    """Raise :class:`TLSError` if a TLS client could not complete its handshake."""
    reason = diagnose(probe(endpoints, tls=True, ca_file=ca_file, timeout=timeout))
    if reason is not None:
        raise TLSError(f"RocketMQ proxy {url}: {reason}")


def explain(endpoints: str, *, tls: bool, ca_file: str | None, url: str) -> TLSError | None:
    """After a failed call: the TLS mismatch behind it, if that is what it was."""
    reason = diagnose(probe(endpoints, tls=tls, ca_file=ca_file, timeout=2.0))
    return None if reason is None else TLSError(f"RocketMQ proxy {url}: {reason}")
