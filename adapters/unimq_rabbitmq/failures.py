"""Why RabbitMQ refused a connection or an operation, as a typed unimq error a user can act on.

aiormq reports most refusals in ways that hide the reason: an unknown or forbidden virtual host
is an ``InvalidFrameError`` ("Expected one of ['Connection.OpenOk'], got <Connection.Close
object at 0x…>"), a TLS failure an ``AMQPConnectionError`` wrapping the ``ssl`` error, a plaintext
client on a TLS port a frame that cannot be parsed, and it logs "error when creating transport"
at ERROR level before raising. This module turns each into the error unimq documents
(docs/security.md): ``AuthenticationError``, ``AuthorizationError`` (naming the vhost, queue or
exchange and the user), ``TLSError`` (saying whether the certificate is untrusted, names another
host, or the port speaks the other protocol), else ``ConnectionFailedError``. Every message goes
through the URL's mask: it shows the user name, never a password or a key passphrase.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

import aiormq
from pamqp.commands import Connection

from unimq.errors import (
    AuthenticationError,
    AuthorizationError,
    ConnectionFailedError,
    TLSError,
    UnimqError,
)
from unimq.url import BrokerURL

#: OpenSSL verify codes of a certificate that is valid but names another host / IP address.
_HOST_MISMATCH = {62, 64}
#: What OpenSSL says when a TLS client reads a plaintext answer (the AMQP protocol header).
_PLAINTEXT_ANSWER = re.compile(
    r"WRONG_VERSION_NUMBER|wrong version number|record layer failure|packet length too long"
    r"|unknown protocol|http request",
    re.IGNORECASE,
)
_ACCESS = re.compile(r"(?P<perm>\w+) access to (?P<kind>queue|exchange) '(?P<name>[^']*)'")


class _DropTransportErrors(logging.Filter):
    """Drops aiormq's "error when creating transport" record, which repeats the exception that
    unimq raises (typed, masked) a moment later."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("error when creating transport")


_FILTER = _DropTransportErrors()
_quiet_depth = 0


@contextmanager
def quiet_connect_logs() -> Iterator[None]:
    """While a first connect runs, keep aiormq's duplicate of the error off the logs (and so
    off stderr). Reconnects of a running broker still log it: no unimq error reports those."""
    global _quiet_depth
    logger = logging.getLogger("aiormq.connection")
    if _quiet_depth == 0:
        logger.addFilter(_FILTER)
    _quiet_depth += 1
    try:
        yield
    finally:
        _quiet_depth -= 1
        if _quiet_depth == 0:
            logger.removeFilter(_FILTER)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    item: BaseException | None = exc
    while item is not None and id(item) not in seen:
        seen.add(id(item))
        yield item
        item = item.__cause__ or item.__context__


def _close_frame(exc: BaseException) -> Connection.Close | None:
    """The ``Connection.Close`` RabbitMQ answered ``Connection.Open`` with. aiormq raises an
    ``InvalidFrameError`` that shows only the frame's ``repr``; the frame itself is still a
    local of aiormq's ``_rpc`` in the traceback. ``None`` when it cannot be found."""
    tb: TracebackType | None = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame.f_locals.get("frame")
        if isinstance(frame, Connection.Close):
            return frame
        tb = tb.tb_next
    return None


def connect_failure(
    exc: BaseException, url: BrokerURL, *, user: str, mechanism: str, secrets: tuple[str, ...]
) -> UnimqError:
    """The unimq error for a failed first connect (``exc`` from ``aio_pika.connect_robust``)."""
    where = url.redacted()
    vhost = url.path[1:] if len(url.path) > 1 else "/"

    def masked(text: str) -> str:
        return url.mask(text, secrets)

    if isinstance(exc, aiormq.exceptions.ProbableAuthenticationError):
        if mechanism == "external":
            return AuthenticationError(
                f"RabbitMQ at {where} refused the client certificate (EXTERNAL): no user is "
                f"named after its subject: {masked(str(exc))}"
            )
        return AuthenticationError(f"RabbitMQ refused the credentials for {where} (user {user!r})")
    if isinstance(exc, aiormq.exceptions.AuthenticationError):
        offered = exc.args[0] if exc.args else "?"
        return AuthenticationError(
            f"RabbitMQ at {where} does not offer the {mechanism.upper()} mechanism (it offers "
            f"{offered}); EXTERNAL needs amqps://, a client certificate and the "
            "rabbitmq_auth_mechanism_ssl plugin"
        )
    if isinstance(exc, aiormq.exceptions.InvalidFrameError) and "Connection.Close" in str(exc):
        close = _close_frame(exc)
        reason = close.reply_text if close is not None else ""
        if "not found" in reason:
            return AuthorizationError(
                f"RabbitMQ at {where} has no virtual host {vhost!r} (the URL path names the "
                "vhost; '/' is the default one)"
            )
        if "refused" in reason:
            return AuthorizationError(
                f"RabbitMQ at {where} refused virtual host {vhost!r} to user {user!r}: the user "
                "has no permissions there"
            )
        return AuthorizationError(
            f"RabbitMQ at {where} refused to open virtual host {vhost!r} for user {user!r}: "
            f"{masked(reason) or 'it does not exist or the user may not use it'}"
        )
    for item in _chain(exc):
        if isinstance(item, ssl.SSLCertVerificationError):
            if item.verify_code in _HOST_MISMATCH:
                return TLSError(
                    f"TLS: the certificate of RabbitMQ at {where} is not valid for host "
                    f"{url.host!r} (wrong host name: {item.verify_message}); connect with a "
                    "name the certificate lists"
                )
            return TLSError(
                f"TLS: the certificate of RabbitMQ at {where} is not trusted "
                f"({item.verify_message}); set ca_file to the CA that signed it"
            )
        if isinstance(item, ssl.SSLError) and _PLAINTEXT_ANSWER.search(str(item)):
            return TLSError(
                f"TLS: RabbitMQ at {where} answered in plaintext, not TLS: port {url.port} is "
                "a plaintext AMQP listener; use amqp:// or the TLS port"
            )
        if isinstance(item, ssl.SSLError):
            return TLSError(f"TLS handshake with RabbitMQ at {where} failed: {masked(str(item))}")
    return ConnectionFailedError(
        f"cannot connect to RabbitMQ at {where}: {masked(f'{type(exc).__name__}: {exc}')}"
    )


def refused_connection(exc: BaseException) -> bool:
    """True when nothing listened (no answer to probe for the protocol it speaks)."""
    return any(isinstance(item, ConnectionRefusedError) for item in _chain(exc)) or (
        isinstance(exc, aiormq.exceptions.AMQPConnectionError)
        and bool(exc.args)
        and exc.args[0] in (111, 61, 10061)
    )


async def speaks_tls(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether the server on ``host:port`` answers the AMQP protocol header with a TLS record
    (an alert: it is a TLS listener), for the message of a plaintext client on a TLS port."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    try:
        writer.write(b"AMQP\x00\x00\x09\x01")
        first = await asyncio.wait_for(reader.read(3), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    finally:
        writer.close()
    # a TLS record: content type 21 (alert) or 22 (handshake), version 3.x
    return len(first) >= 2 and first[0] in (21, 22) and first[1] == 3


def plaintext_on_tls_port(url: BrokerURL) -> TLSError:
    return TLSError(
        f"RabbitMQ at {url.redacted()} speaks TLS on port {url.port}: the plaintext AMQP client "
        "got a TLS alert back; use amqps:// for this port (or the plaintext port)"
    )


def access_refused(exc: BaseException, url: BrokerURL, user: str, action: str) -> UnimqError | None:
    """An :class:`AuthorizationError` for a channel closed with 403 ACCESS_REFUSED while doing
    ``action`` (e.g. "publish to topic 'x'"), naming the queue or exchange; else ``None``."""
    refused = next(
        (i for i in _chain(exc) if isinstance(i, aiormq.exceptions.ChannelAccessRefused)), None
    )
    if refused is None:
        return None
    text = str(refused.args[0]) if refused.args else str(refused)
    match = _ACCESS.search(text)
    vhost = url.path[1:] if len(url.path) > 1 else "/"
    if match is None:
        return AuthorizationError(
            f"RabbitMQ refused user {user!r} to {action} in virtual host {vhost!r}: "
            f"{url.mask(text)}"
        )
    return AuthorizationError(
        f"RabbitMQ refused user {user!r} to {action}: no {match['perm']} permission on "
        f"{match['kind']} {match['name']!r} in virtual host {vhost!r}"
    )
