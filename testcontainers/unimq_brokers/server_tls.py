"""A throwaway certificate authority, made at test time for the secured Kafka and RocketMQ.

(``unimq_brokers.tls`` is the RabbitMQ fixture's, with client certificates and ``localhost`` as
the server name; the two were written in parallel and could be merged into one module.)

Nothing here is committed key material: every test session generates a fresh CA and signs a
server certificate with it, so a leaked file from a test run is worth nothing. The server
certificate names only ``127.0.0.1`` (an IP subject alternative name), which is how the tests
connect: a client that connects through ``localhost`` instead is the "wrong host name" case, and
a second, unrelated CA is the "untrusted certificate" case.
"""

from __future__ import annotations

import datetime
import ipaddress
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .tls import new_ca

_PEM = serialization.Encoding.PEM


@dataclass(frozen=True)
class ServerTLS:
    """PEM files of one throwaway CA and the server certificate it signed."""

    directory: Path
    ca_cert: Path  # what a client trusts
    server_cert: Path  # leaf certificate followed by the CA certificate
    server_key: Path  # PKCS#8, unencrypted
    other_ca_cert: Path  # an unrelated CA: trusting it alone must fail verification

    def server_pem(self) -> str:
        """The private key followed by the certificate chain, one PEM text (Kafka's
        ``ssl.keystore.type=PEM`` file format)."""
        return self.server_key.read_text() + self.server_cert.read_text()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_server_tls(hosts: tuple[str, ...] = ("127.0.0.1",)) -> ServerTLS:
    """Generate a CA and a server certificate for ``hosts`` (IPs or DNS names) in a new
    temporary directory (removed with the test process's temp files)."""
    ca_key, ca_cert = new_ca("unimq test CA (throwaway)")
    _, other_ca = new_ca("unimq unrelated CA (throwaway)")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("unimq test broker"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory = Path(tempfile.mkdtemp(prefix="unimq-tls-"))
    paths = ServerTLS(
        directory=directory,
        ca_cert=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        other_ca_cert=directory / "other-ca.pem",
    )
    paths.ca_cert.write_bytes(ca_cert.public_bytes(_PEM))
    paths.other_ca_cert.write_bytes(other_ca.public_bytes(_PEM))
    paths.server_cert.write_bytes(cert.public_bytes(_PEM) + ca_cert.public_bytes(_PEM))
    paths.server_key.write_bytes(
        key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    paths.server_key.chmod(0o600)
    return paths
