"""The PostgreSQL store's URL: a libpq connection URI, with the store's own query parameters
taken out of it (``auth_refresh_schema``, ``auth_refresh_pool_size``), and the server settings
the store's connections start with."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar, cast

from auth_refresh.exceptions import ConfigurationError

__all__ = ["SERVER_SETTINGS", "split_url"]

T = TypeVar("T")

# The store's sessions' settings; the URL's query may set others, or these differently.
SERVER_SETTINGS = {
    # In milliseconds: a row lock held elsewhere or a stalled disk ends the statement.
    "statement_timeout": "1000",
    # Nothing answered is lost when the server fails: a commit waits for its WAL flush (the
    # URL may turn this off, trading the last moments' refreshes for throughput).
    "synchronous_commit": "on",
}


def split_url(url: str) -> tuple[str, dict[str, Any]]:
    """``url`` as the libpq URI to connect with and the store's options taken out of its query
    (``PostgresRefreshTokenStore``'s keyword arguments)."""
    parts = urllib.parse.urlsplit(url)
    try:
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
    except ValueError as error:
        raise ConfigurationError(f"not a usable PostgreSQL URL: {error}") from None
    options: dict[str, Any] = {}
    passed: list[tuple[str, str]] = []
    for name, value in query:
        if name == "auth_refresh_schema":
            if value not in ("create", "managed"):
                raise ConfigurationError("auth_refresh_schema must be 'create' or 'managed'")
            options["create_schema"] = value == "create"
        elif name == "auth_refresh_pool_size":
            options["pool_size"] = _positive(name, value, int)
        elif name == "connect_timeout":
            # libpq's parameter; asyncpg takes it as an argument, not from the URL.
            options["connect_timeout"] = _positive(name, value, float)
        elif name in SERVER_SETTINGS:
            # asyncpg would let the store's defaults win over the URL's.
            options.setdefault("server_settings", {})[name] = value
        else:
            passed.append((name, value))
    query_left = urllib.parse.urlencode(passed)
    dsn = urllib.parse.urlunsplit(
        (parts.scheme, parts.netloc, parts.path, query_left, parts.fragment)
    )
    return dsn, options


def _positive(name: str, value: str, kind: Callable[[str], T]) -> T:
    try:
        number = kind(value)
    except ValueError:
        number = None
    if number is None or not cast(float, number) > 0:
        raise ConfigurationError(f"{name} must be a positive number, not {value!r}")
    return number
