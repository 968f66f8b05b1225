"""Opening a kombu connection from a unimq URL, and mapping kombu's errors to unimq's.

The password reaches kombu only as a keyword argument, never inside a URL string, and every
error text that leaves the adapter goes through ``url.mask`` (kombu and redis-py quote the
connection details in some of theirs).
"""

from __future__ import annotations

import importlib
from typing import Any

from unimq.errors import AuthenticationError, ConnectionFailedError, UnimqError
from unimq.url import BrokerURL

from .options import KombuOptions
from .profiles import Profile


def load_kombu() -> Any:
    """kombu, typed loosely: it ships only partial annotations."""
    return importlib.import_module("kombu")


UNACKED_MUTEX_EXPIRE = 10  # seconds
SOCKET_TIMEOUT = 10  # seconds: a Redis reply that takes longer is a dead server
#: Seconds an SQS reply may take beyond the long-polling wait (``wait_time_seconds``) before
#: botocore gives up on the call and retries it.
SQS_READ_MARGIN = 10.0
SQS_CONNECT_TIMEOUT = 5
#: botocore attempts per SQS call (the first included).
SQS_ATTEMPTS = 3


def open_connection(url: BrokerURL, profile: Profile, options: KombuOptions) -> Any:
    """A connected ``kombu.Connection`` (runs on the connection's thread: it blocks)."""
    kombu = load_kombu()

    transport_options: dict[str, Any] = {"visibility_timeout": options.visibility_timeout}
    if profile.kombu_scheme in ("redis", "rediss"):
        # kombu's restore of unacked messages runs under a Redis lock that lives 300 s by
        # default: a consumer killed while it held the lock stopped every restore for five
        # minutes. Each restore is its own transaction (never done twice), so a short lock
        # only lets two consumers scan at once.
        transport_options["unacked_mutex_expire"] = UNACKED_MUTEX_EXPIRE
        # redis-py waits for a reply forever by default: a server that accepts the connection
        # and never answers held a connection thread for good (connect_timeout gave up on it,
        # the thread stayed). kombu reads blocking commands only once the socket is readable,
        # so this bounds a silent server, not a long BLMOVE.
        transport_options["socket_connect_timeout"] = SOCKET_TIMEOUT
        transport_options["socket_timeout"] = SOCKET_TIMEOUT
    if profile.kombu_scheme == "sqs":
        transport_options.update(
            region=options.region,
            is_secure=options.secure,
            wait_time_seconds=options.wait_time_seconds,
            polling_interval=options.poll_interval,
            # botocore's defaults (60 s connect and read timeouts, retried) let one stalled
            # HTTP call hold a connection thread for minutes: a publish or a receive behind
            # it waited that long. Bounded, a stalled call is retried within seconds.
            **{"client-config": sqs_client_config(options)},
        )
    password = url.password.get_secret_value() if url.password else None
    connection = kombu.Connection(
        hostname=url.host or "localhost",
        port=url.port,
        userid=url.username or None,
        password=password,
        virtual_host=(url.path or "").lstrip("/") or None,
        transport=_transport(profile),
        transport_options=transport_options,
        connect_timeout=5,
    )
    try:
        connection.ensure_connection(max_retries=1, timeout=5)
        if profile.kombu_scheme == "sqs":  # kombu connects lazily to SQS: make one real call
            connection.default_channel.sqs().list_queues(QueueNamePrefix="unimq-probe")
    except Exception as exc:
        connection.release()
        raise connect_error(url, exc) from None
    return connection


def sqs_client_config(options: KombuOptions) -> dict[str, Any]:
    """botocore ``Config`` settings for the adapter's SQS clients (kombu's ``client-config``)."""
    return {
        "connect_timeout": SQS_CONNECT_TIMEOUT,
        "read_timeout": options.wait_time_seconds + SQS_READ_MARGIN,
        "retries": {"total_max_attempts": SQS_ATTEMPTS},
    }


def _transport(profile: Profile) -> Any:
    """kombu's transport name, or for Redis the subclass that takes messages atomically
    (redis_channel: a consumer killed between kombu's pop and its unacked record lost one)."""
    if profile.kombu_scheme == "redis":
        from .redis_channel import AtomicTransport

        return AtomicTransport
    return profile.kombu_scheme


def connect_error(url: BrokerURL, exc: BaseException) -> UnimqError:
    text = url.mask(f"{type(exc).__name__}: {exc}")
    if _refused_credentials(exc):
        return AuthenticationError(f"{url.redacted()} refused the credentials: {text}")
    return ConnectionFailedError(f"cannot connect to {url.redacted()}: {text}")


_AUTH_WORDS = ("wrongpass", "noauth", "username-password", "invalid password", "signature")


def _refused_credentials(exc: BaseException) -> bool:
    """Whether kombu's error (or what it wraps: redis-py, botocore) is a credentials refusal."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if "Authentication" in type(seen).__name__ or any(
            word in str(seen).lower() for word in _AUTH_WORDS
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
