"""Broker URLs: parsed once, validated early, and never printed with their password.

The password lives only in :attr:`BrokerURL.password` (a pydantic ``SecretStr``); ``str()``,
``repr()`` and every error message use :meth:`BrokerURL.redacted`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import SecretStr

from .errors import InvalidURLError

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*$")
_MASK = "***"


def redact(url: str) -> str:
    """Mask the password of any ``scheme://user:password@host`` URL, even a malformed one."""
    return re.sub(r"(?<=://)([^:/@\s]*):[^@/\s]*@", rf"\1:{_MASK}@", url)


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int | None


@dataclass(frozen=True)
class BrokerURL:
    """A parsed broker URL. ``hosts`` keeps every ``host:port`` of a comma-separated list."""

    scheme: str
    hosts: tuple[HostPort, ...]
    username: str | None
    password: SecretStr | None = field(repr=False)
    path: str
    query: tuple[tuple[str, str], ...]
    raw: str = field(repr=False)

    @classmethod
    def parse(cls, url: str) -> BrokerURL:
        if not isinstance(url, str) or not url.strip():
            raise InvalidURLError(
                "the broker URL is empty; expected e.g. 'memory://' or 'amqp://host'"
            )
        url = url.strip()
        shown = redact(url)
        if "://" not in url:
            raise InvalidURLError(
                f"malformed broker URL {shown!r}: expected 'scheme://[user:password@]host[:port][/path]'"
            )
        scheme, rest = url.split("://", 1)
        if not _SCHEME.match(scheme):
            raise InvalidURLError(f"malformed broker URL {shown!r}: invalid scheme {scheme!r}")
        parts = urlsplit(f"x://{rest}")
        netloc = parts.netloc
        userinfo, _, hostlist = netloc.rpartition("@")
        username: str | None = None
        password: SecretStr | None = None
        if userinfo:
            user, sep, pwd = userinfo.partition(":")
            username = unquote(user) or None
            password = SecretStr(unquote(pwd)) if sep else None
        hosts: list[HostPort] = []
        for item in filter(None, hostlist.split(",")):
            hosts.append(_parse_host(item, shown))
        try:
            query = tuple(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False))
        except ValueError as exc:  # pragma: no cover - parse_qsl is lenient
            raise InvalidURLError(f"malformed query in broker URL {shown!r}: {exc}") from None
        return cls(
            scheme=scheme.lower(),
            hosts=tuple(hosts),
            username=username,
            password=password,
            path=unquote(parts.path),
            query=query,
            raw=url,
        )

    @property
    def host(self) -> str | None:
        return self.hosts[0].host if self.hosts else None

    @property
    def port(self) -> int | None:
        return self.hosts[0].port if self.hosts else None

    def query_dict(self) -> dict[str, str]:
        return dict(self.query)

    def redacted(self) -> str:
        return redact(self.raw)

    def mask(self, text: str) -> str:
        """``text`` (a client library's error message, say) with this URL's password masked."""
        if self.password is not None:
            secret = self.password.get_secret_value()
            if secret:
                text = text.replace(secret, _MASK)
        return redact(text)

    def __str__(self) -> str:
        return self.redacted()


def _parse_host(item: str, shown: str) -> HostPort:
    if item.startswith("["):  # IPv6 literal
        host, _, tail = item[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port_text = item.partition(":")
    port: int | None = None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise InvalidURLError(f"malformed broker URL {shown!r}: invalid port {port_text!r}")
        port = int(port_text)
    if not host:
        raise InvalidURLError(f"malformed broker URL {shown!r}: empty host in {item!r}")
    return HostPort(host=host, port=port)
