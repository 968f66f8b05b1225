"""A throwaway certificate authority for the secured test brokers, made at test time.

Nothing here is committed: every session generates a new CA, a server certificate and a client
certificate into a temporary directory (``cryptography``), mounts what the broker needs into its
container, and hands the client side to the tests. The keys are small and short-lived (EC P-256,
two days); they protect nothing but a container on 127.0.0.1.
"""

from __future__ import annotations

import datetime
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: The server certificate's only name: clients must connect to ``localhost``; ``127.0.0.1`` is
#: the wrong host name on purpose (the tests' host-name check).
SERVER_NAME = "localhost"


@dataclass(frozen=True)
class CertificateFiles:
    """PEM files of one throwaway PKI (paths on the host)."""

    directory: Path
    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path  # unencrypted
    client_key_encrypted: Path  # the same key, encrypted with ``key_password``
    key_password: str
    client_name: str
    other_ca_file: Path  # a CA that signed nothing the broker presents


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "unimq tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(
    subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
    )


def new_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A throwaway CA (EC P-256, valid two days); also the CA of server_tls.py's brokers."""
    key = _key()
    cert = (
        _builder(common_name, _name(common_name), key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    common_name: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    *,
    server: bool,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _builder(common_name, ca_cert.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False
        )
    return key, builder.sign(ca_key, hashes.SHA256())


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    # The broker runs as its own user inside the container and reads these through a bind
    # mount: world-readable (throwaway keys in a private temporary directory).
    os.chmod(path, 0o644)
    return path


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey, password: str | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, encryption
    )


def make_certificates(client_name: str = "unimq-cert-client") -> CertificateFiles:
    """A new CA, a server certificate for ``localhost`` and a client certificate whose common
    name is ``client_name`` (the RabbitMQ user of the EXTERNAL mechanism), in a new directory."""
    directory = Path(tempfile.mkdtemp(prefix="unimq-tls-"))
    os.chmod(directory, 0o755)
    ca_key, ca_cert = new_ca("unimq throwaway test CA")
    server_key, server_cert = _leaf(SERVER_NAME, ca_key, ca_cert, server=True)
    client_key, client_cert = _leaf(client_name, ca_key, ca_cert, server=False)
    _, other_ca = new_ca("unimq unrelated CA")
    password = "kp-" + os.urandom(9).hex()
    return CertificateFiles(
        directory=directory,
        ca_file=_write(directory / "ca.pem", _pem(ca_cert)),
        server_cert=_write(directory / "server.pem", _pem(server_cert)),
        server_key=_write(directory / "server.key", _key_pem(server_key)),
        client_cert=_write(directory / "client.pem", _pem(client_cert)),
        client_key=_write(directory / "client.key", _key_pem(client_key)),
        client_key_encrypted=_write(directory / "client-enc.key", _key_pem(client_key, password)),
        key_password=password,
        client_name=client_name,
        other_ca_file=_write(directory / "other-ca.pem", _pem(other_ca)),
    )
