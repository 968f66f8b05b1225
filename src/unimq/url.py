"""Broker URLs: parsed once, validated early, and never printed with their password.

The password lives only in :attr:`BrokerURL.password` (a pydantic ``SecretStr``); ``str()``,
``repr()`` and every error message use :meth:`BrokerURL.redacted`, and text from client
libraries goes through :meth:`BrokerURL.mask`.

Users paste passwords without percent-encoding them, so a raw ``@``, ``/``, ``?``, ``#`` or
space can sit inside the password. The parser takes the userinfo up to the *last* ``@`` of the
authority, and when the standard authority (up to the first ``/?#``) is not a valid host list
while an ``@`` follows, up to that ``@``; a URL with a userinfo *and* another ``@`` after the
host (``u:p@h?x@y``) is ambiguous and refused (percent-encode the ``@``). Masking errs the
other way: :func:`redact` hides everything from the first ``:`` after ``scheme://`` to the
*last* ``@`` of the text (which can over-mask a query holding an ``@``; never under-mask), and
the values of secret options (:func:`is_secret_option`: ``password``, ``sasl_password``,
``ssl_key_password``, ``secret_key``, tokens...) anywhere as ``name=value``. Query values must
be percent-encoded to contain ``&`` or ``#``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, quote_plus, unquote

from pydantic import SecretStr

from .errors import InvalidURLError

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*$")
MASK = "***"
_MASK = MASK  # old name

#: Option names whose values are secrets (matched anywhere in the name, case-insensitively).
_SECRET_NAME = re.compile(
    r"pass(?:word|wd|phrase)?(?![a-z])|passw|pwd|secret|token|credential|api[_.-]?key|private[_.-]?key",
    re.IGNORECASE,
)
# userinfo: scheme://user:password@ - the password runs to the last '@' (DOTALL: even across a
# newline), so a raw '@', '/', '?', '#' or space in it is masked too.
_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:@\s/]*):.*@", re.DOTALL)
# name=value pairs whose name is a secret option: the value runs to the next '&name=', '#',
# whitespace or the end.
_SECRET_PAIR = re.compile(
    r"(?P<name>[\w.-]*(?:pass(?:word|wd|phrase)?|pwd|secret|token|credential|api[_.-]?key"
    r"|private[_.-]?key)[\w.-]*)(?P<sep>=|%3D)(?P<value>(?:[^&#\s]|&(?![\w.-]+=))*)",
    re.IGNORECASE,
)
E = TypeVar("E", bound=BaseException)
_HOST = re.compile(r"^[^\s@/?#\[\]]+$")


def is_secret_option(name: str) -> bool:
    """Whether an option called ``name`` holds a secret (its value is never shown)."""
    return bool(_SECRET_NAME.search(name))


def redact(text: str) -> str:
    """``text`` with the password of any ``scheme://user:password@host`` URL in it masked, and
    the value of any secret ``name=value`` option (``sasl_password=...``), even in a malformed
    URL. Errs towards masking too much."""
    if "://" in text:
        text = _USERINFO.sub(rf"\1:{MASK}@", text)
    if "=" in text or "%3D" in text or "%3d" in text:
        text = _SECRET_PAIR.sub(rf"\g<name>\g<sep>{MASK}", text)
    return text


def mask_secrets(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret (also percent-encoded, and as ``repr``
    shows it) replaced by ``***``, then :func:`redact`-ed."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if not secret:
            continue
        for form in {secret, quote(secret, safe=""), quote_plus(secret), repr(secret)[1:-1]}:
            if form and form in text:
                text = text.replace(form, MASK)
    return redact(text)


def option_secrets(options: Mapping[Any, Any]) -> tuple[str, ...]:
    """The values of secret options in ``options`` (nested dicts such as ``librdkafka=`` too)."""
    found: list[str] = []
    for name, value in options.items():
        if isinstance(value, Mapping):
            found.extend(option_secrets(value))
        elif isinstance(name, str) and is_secret_option(name) and value is not None:
            text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
            if text:
                found.append(text)
    return tuple(found)


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
    query: tuple[tuple[str, str], ...] = field(repr=False)
    raw: str = field(repr=False)

    @classmethod
    def parse(cls, url: str) -> BrokerURL:
        if not isinstance(url, str) or not url.strip():
            raise InvalidURLError(
                "the broker URL is empty; expected e.g. 'memory://' or 'amqp://host'"
            )
        url = url.strip()
        shown = redact(url)
        if not _encodable(url):
            raise InvalidURLError(
                f"malformed broker URL {_shown(url)!r}: it contains a lone surrogate"
            )
        if "://" not in url:
            raise InvalidURLError(
                f"malformed broker URL {shown!r}: expected 'scheme://[user:password@]host[:port][/path]'"
            )
        scheme, rest = url.split("://", 1)
        if not _SCHEME.match(scheme):
            raise InvalidURLError(f"malformed broker URL {shown!r}: invalid scheme {scheme!r}")
        userinfo, hostlist, tail = _split_authority(rest)
        username: str | None = None
        password: SecretStr | None = None
        if userinfo is not None:
            user, sep, pwd = userinfo.partition(":")
            username = unquote(user) or None
            password = SecretStr(unquote(pwd)) if sep else None
        secrets = _url_secrets(password, tail)
        shown = mask_secrets(url, secrets)
        hosts = _parse_hosts(hostlist, shown)
        if hosts is None:
            raise InvalidURLError(
                f"malformed broker URL {shown!r}: expected host[:port] items (port 1-65535), "
                "comma-separated; percent-encode special characters in the password"
            )
        before_fragment = tail.partition("#")[0]
        path, _, query_text = before_fragment.partition("?")
        query = tuple(parse_qsl(query_text, keep_blank_values=True, strict_parsing=False))
        return cls(
            scheme=scheme.lower(),
            hosts=tuple(hosts),
            username=username,
            password=password,
            path=unquote(path),
            query=query,
            raw=url,
        )

    @property
    def host(self) -> str | None:
        return self.hosts[0].host if self.hosts else None

    @property
    def port(self) -> int | None:
        return self.hosts[0].port if self.hosts else None

    @property
    def secrets(self) -> tuple[str, ...]:
        """The password and the values of secret query options: what :meth:`mask` hides."""
        return _url_secrets(self.password, self.raw.split("://", 1)[-1])

    def query_dict(self) -> dict[str, str]:
        return dict(self.query)

    def redacted(self) -> str:
        return mask_secrets(self.raw, self.secrets)

    def mask(self, text: str, extra: Iterable[str] = ()) -> str:
        """``text`` (a client library's error message, say) with this URL's secrets, and
        ``extra`` ones (secret transport options), masked."""
        return mask_secrets(text, (*self.secrets, *extra))

    def __str__(self) -> str:
        return self.redacted()

    def __repr__(self) -> str:
        return f"BrokerURL({self.redacted()!r})"


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(url: str) -> str:
    return redact(url.encode("utf-8", "replace").decode("utf-8"))


def _split_authority(rest: str) -> tuple[str | None, str, str]:
    """``(userinfo, host list, path?query#fragment)`` of what follows ``scheme://``."""
    end = _authority_end(rest, 0)
    authority, tail = rest[:end], rest[end:]
    at = authority.rfind("@")
    hostlist = authority[at + 1 :]
    last = rest.rfind("@")
    if last >= end and (_parse_hosts(hostlist, "") is None or (at >= 0 and not hostlist)):
        # Not a valid host list (or none after a userinfo), and an '@' follows: a raw '/', '?'
        # or '#' in the password.
        after = _authority_end(rest, last + 1)
        return rest[:last], rest[last + 1 : after], rest[after:]
    if at >= 0:
        if last >= end:
            # user:pass@host?...@...: the password may hold a raw '@' and '?', or the query an
            # '@'. Refused rather than guessed (a guess could show part of the password).
            raise InvalidURLError(
                f"ambiguous broker URL {redact('x://' + rest)[4:]!r}: an '@' follows the host; "
                "percent-encode '@' as %40 in the password or the query"
            )
        return authority[:at], hostlist, tail
    return None, authority, tail


def _authority_end(text: str, start: int) -> int:
    ends = [i for i in (text.find(c, start) for c in "/?#") if i >= 0]
    return min(ends) if ends else len(text)


def _parse_hosts(hostlist: str, shown: str) -> list[HostPort] | None:
    hosts: list[HostPort] = []
    for item in filter(None, hostlist.split(",")):
        host = _parse_host(item)
        if host is None:
            return None
        hosts.append(host)
    return hosts


def _parse_host(item: str) -> HostPort | None:
    if item.startswith("["):  # IPv6 literal
        host, close, tail = item[1:].partition("]")
        if not close or (tail and not tail.startswith(":")):
            return None
        port_text = tail[1:]
        if not host or not re.fullmatch(r"[0-9A-Fa-f:.%\w-]+", host):
            return None
    else:
        host, _, port_text = item.partition(":")
        if not host or not _HOST.match(host):
            return None
    port: int | None = None
    if port_text:
        if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
            return None
        port = int(port_text)
    return HostPort(host=host, port=port)


def _url_secrets(password: SecretStr | None, tail: str) -> tuple[str, ...]:
    found: list[str] = []
    if password is not None and password.get_secret_value():
        found.append(password.get_secret_value())
    if "=" in tail:
        query = tail.partition("#")[0].partition("?")[2]
        for name, value in parse_qsl(query, keep_blank_values=True):
            if is_secret_option(name) and value:
                found.append(value)
                found.append(quote_plus(value))
    return tuple(found)


def scrub(error: E, mask: Callable[[str], str]) -> E:
    """``error`` (an adapter's own :class:`~unimq.errors.UnimqError`) made safe to show: its
    message masked in place, and its ``__cause__``/``__context__`` chain cut at the first link
    whose text would show a secret (the raw client error that a traceback would print)."""
    text = str(error)
    masked = mask(text)
    if masked != text or any(mask(str(a)) != str(a) for a in error.args):
        error.args = (masked,)
    link: BaseException = error
    seen = {id(error)}
    while True:
        nxt = link.__cause__ if link.__cause__ is not None else link.__context__
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(nxt))
        if mask(str(nxt)) != str(nxt) or mask(repr(nxt)) != repr(nxt):
            link.__cause__ = None
            link.__context__ = None
            link.__suppress_context__ = True
            break
        link = nxt
    return error
