"""SQL URLs as the SQL plugins take them: one reading, one masking, for the store and the outbox.

``postgresql://`` means the psycopg (async) driver and ``sqlite://`` aiosqlite; ``?table=`` names
the table; a password never appears in an error or a log line.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy.engine import make_url

from unimq.errors import ConfigurationError
from unimq.url import redact


def parse(url: str, table: str, what: str) -> tuple[str, str]:
    """``(engine URL, table)`` for ``url``; ``what`` names the plugin in errors."""
    shown = redact(url)
    try:
        parsed = make_url(url)
    except Exception:
        raise ConfigurationError(f"malformed {what} URL {shown!r}") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    query_table = parsed.query.get("table")
    if query_table is not None:
        table = query_table if isinstance(query_table, str) else query_table[-1]
        parsed = parsed.difference_update_query(["table"])
    if not table:
        raise ConfigurationError(f"{what} {shown!r}: empty table name")
    return parsed.render_as_string(hide_password=False), table


def mask(text: str, url: str) -> str:
    """``text`` without the password of ``url`` (nor any URL's password)."""
    try:
        password = make_url(url).password
    except Exception:
        password = None
    if password:
        text = text.replace(str(password), "***")
    return redact(text)


def aware(value: datetime) -> datetime:
    """A timestamp read back from a database that dropped its zone (SQLite): UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
