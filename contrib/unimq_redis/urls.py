"""Reading a ``redis://`` URL for the store and the rate limiter, never echoing its password.

``redis://[:password@]host[:port][/db]?<ours>&<client options>`` (``rediss://`` for TLS,
``unix://`` for a socket): the query parameters a plugin reads itself (``ttl``, ``key``, ...)
are split off; the others go to ``redis.asyncio.Redis.from_url`` (``socket_timeout=5``, ...).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as redis

from unimq.errors import ConfigurationError
from unimq.url import redact


def split(url: str, what: str, ours: Collection[str]) -> tuple[str, dict[str, str], str]:
    """``(client URL, our parameters, the URL as shown)``; the shown URL has no password and
    no query. ``what`` names the plugin in errors."""
    shown = redact(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigurationError(f"{what}: malformed redis URL {shown!r}") from None
    if parts.scheme.lower() not in ("redis", "rediss", "unix"):
        raise ConfigurationError(f"{what}: expected a redis:// or rediss:// URL, got {shown!r}")
    mine: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in ours:
            mine[name] = value
        else:
            rest.append((name, value))
    client_url = urlunsplit(parts._replace(query=urlencode(rest)))
    return client_url, mine, redact(urlunsplit(parts._replace(query="")))


def client(client_url: str, url: str, what: str, **defaults: Any) -> redis.Redis:
    """The client for ``client_url`` (options in its query win over ``defaults``)."""
    try:
        return redis.Redis.from_url(client_url, **defaults)
    except Exception as exc:  # redis-py's own URL checks; never echo the password
        raise ConfigurationError(
            f"{what}: cannot use {redact(url)!r}: {type(exc).__name__}: {mask(str(exc), url)}"
        ) from None


def mask(text: str, url: str) -> str:
    """``text`` (a redis-py error, say) without ``url``'s password."""
    password = urlsplit(url).password if "://" in url else None
    if password:
        text = text.replace(password, "***")
    return redact(text)


def describe(client: redis.Redis) -> str:
    """Where a client you passed in connects (no password)."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    host, port, db = kwargs.get("host", "localhost"), kwargs.get("port", 6379), kwargs.get("db", 0)
    return f"redis://{host}:{port}/{db}"
