"""librdkafka errors → unimq's typed errors, and the callbacks that collect them.

librdkafka reports most failures asynchronously (``error_cb``) and logs the rest; left alone,
a refused password, a refused ACL or a failed TLS handshake would print lines on stderr while
the caller waits for a timeout. Here they are remembered (:class:`ErrorLog`) so the code that
waits can raise the matching :mod:`unimq.errors` class at once, and librdkafka's own log lines
go to DEBUG (:class:`LibrdkafkaLog`). Messages name the resource and the user, never a secret:
librdkafka's texts carry neither passwords nor key passphrases.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from unimq.errors import (
    AuthenticationError,
    AuthorizationError,
    ConnectionFailedError,
    UnimqError,
)

logger = logging.getLogger("unimq.kafka")

#: The broker refused the credentials.
AUTHENTICATION_CODES = frozenset(
    {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}
)
#: The broker accepted the credentials but its ACLs refuse the operation.
AUTHORIZATION_CODES = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.DELEGATION_TOKEN_AUTHORIZATION_FAILED,
    }
)


class ErrorLog:
    """librdkafka's ``error_cb``: remembers authentication, authorization and TLS failures for
    the caller to raise.

    ``raised=True`` (the connection check, which raises what it sees): nothing is logged above
    DEBUG. Otherwise (producer, consumers: nobody waits on them) the first occurrence of each
    kind is logged at ERROR, repeats at DEBUG, so a refused password does not print a line per
    reconnect.
    """

    def __init__(self, role: str, *, raised: bool = False) -> None:
        self.role = role
        self.raised = raised
        self.auth_error: str | None = None
        self.authorization_error: str | None = None
        self.ssl_error: str | None = None
        self._reported: set[str] = set()

    def __call__(self, error: Any) -> None:
        code = error.code()
        text = error.str()
        if code in AUTHENTICATION_CODES:
            self.auth_error = text
            self._log("authentication failed", text)
        elif code in AUTHORIZATION_CODES:
            self.authorization_error = text
            self._log("not authorized", text)
        elif code == KafkaError._SSL:
            self.ssl_error = text
            self._log("TLS failure", text)
        elif error.fatal():
            logger.error("kafka %s: fatal error: %s", self.role, text)
        else:  # disconnects during a broker restart: librdkafka reconnects by itself
            logger.debug("kafka %s: %s", self.role, text)

    def _log(self, kind: str, text: str) -> None:
        first = not self.raised and kind not in self._reported
        self._reported.add(kind)
        level = logging.ERROR if first else logging.DEBUG
        logger.log(level, "kafka %s: %s: %s", self.role, kind, text)


class LibrdkafkaLog:
    """librdkafka's own log lines, demoted to DEBUG on ``unimq.kafka.<role>``.

    What needs attention reaches :class:`ErrorLog` (authentication, fatal errors) or raises;
    left at their own level, a broker restart would print pages of "connection refused".
    """

    def __init__(self, role: str) -> None:
        self._logger = logging.getLogger(f"unimq.kafka.{role}")

    def log(self, level: int, message: str, *args: Any) -> None:
        self._logger.debug(message, *args)


def describe(exc: KafkaException | KafkaError) -> str:
    error: Any = exc.args[0] if isinstance(exc, KafkaException) and exc.args else exc
    return str(error.str()) if isinstance(error, KafkaError) else str(exc)


def error_code(exc: BaseException) -> Any:
    error: Any = exc.args[0] if isinstance(exc, KafkaException) and exc.args else exc
    return error.code() if isinstance(error, KafkaError) else None


def not_allowed(user: str | None, action: str, detail: str) -> AuthorizationError:
    """The :class:`AuthorizationError` for ``action`` (e.g. "publish to kafka topic 'x'")."""
    who = f"kafka user {user!r}" if user else "this kafka client"
    return AuthorizationError(
        f"{who} may not {action}: the broker's ACLs refuse it ({detail}); "
        "grant the permission on the broker or use another name"
    )


def translate_error(
    exc: KafkaException, what: str, *, user: str | None = None, action: str | None = None
) -> UnimqError:
    """The unimq error for a failed librdkafka call: ``what`` says what was being done,
    ``action`` (default: ``what``) what an :class:`AuthorizationError` says was refused."""
    code = error_code(exc)
    if code in AUTHORIZATION_CODES:
        return not_allowed(user, action or what, describe(exc))
    if code in AUTHENTICATION_CODES:
        return AuthenticationError(f"{what}: {describe(exc)}")
    return ConnectionFailedError(f"{what}: {describe(exc)}")
