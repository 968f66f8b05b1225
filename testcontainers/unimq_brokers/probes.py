"""Dependency-free readiness probes speaking a few bytes of each protocol.

A TCP connect alone proves nothing here: Docker's port proxy accepts
connections on the published host port even while the broker in the
container is still starting.
"""

from __future__ import annotations

import socket
import struct


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by peer")
        buf += chunk
    return buf


def amqp_ready(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when an AMQP 0-9-1 server answers the protocol header with Connection.Start."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"AMQP\x00\x00\x09\x01")
            head = _recv_exact(s, 7)
            # frame type 1 (method) on channel 0
            return head[0] == 1 and head[1:3] == b"\x00\x00"
    except (OSError, ConnectionError):
        return False


def kafka_metadata(host: str, port: int, timeout: float = 2.0) -> list[tuple[int, str, int]] | None:
    """Send a Metadata v1 request (all topics); return the broker list or None.

    Also proves that the broker's advertised listener is what a host-side
    client will be told to connect to.
    """
    client_id = b"unimq-probe"
    # request header v1: api_key=3 (Metadata), api_version=1, correlation_id, client_id
    body = struct.pack(">hhih", 3, 1, 42, len(client_id)) + client_id
    body += struct.pack(">i", -1)  # topics: null -> all
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(struct.pack(">i", len(body)) + body)
            (size,) = struct.unpack(">i", _recv_exact(s, 4))
            data = _recv_exact(s, size)
    except (OSError, ConnectionError, struct.error):
        return None
    try:
        (corr,) = struct.unpack_from(">i", data, 0)
        if corr != 42:
            return None
        off = 4
        (n_brokers,) = struct.unpack_from(">i", data, off)
        off += 4
        brokers = []
        for _ in range(max(n_brokers, 0)):
            node_id, hlen = struct.unpack_from(">ih", data, off)
            off += 6
            bhost = data[off : off + hlen].decode()
            off += hlen
            (bport,) = struct.unpack_from(">i", data, off)
            off += 4
            (rlen,) = struct.unpack_from(">h", data, off)
            off += 2 + max(rlen, 0)
            brokers.append((node_id, bhost, bport))
        return brokers
    except (struct.error, UnicodeDecodeError):
        return None


def kafka_ready(host: str, port: int, timeout: float = 2.0) -> bool:
    brokers = kafka_metadata(host, port, timeout)
    return bool(brokers)


def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_loopback_port() -> int:
    """A currently free TCP port on 127.0.0.1 (picked by the kernel)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def amqp_tls_ready(
    host: str, port: int, ca_file: str, server_name: str, timeout: float = 2.0
) -> bool:
    """:func:`amqp_ready` through TLS, verifying the server certificate against ``ca_file``."""
    import ssl

    context = ssl.create_default_context(cafile=ca_file)
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=server_name) as s,
        ):
            s.settimeout(timeout)
            s.sendall(b"AMQP\x00\x00\x09\x01")
            head = _recv_exact(s, 7)
            return head[0] == 1 and head[1:3] == b"\x00\x00"
    except (OSError, ConnectionError):
        return False
