"""The operator's command line: ``auth-refresh`` (or ``python -m auth_refresh``).

``keys generate`` makes signing keys and prints the ``JWT_MODULE_*`` settings that use them;
``sessions list`` shows a user's live sessions and ``sessions revoke-subject`` logs a user out
everywhere, in the store ``AUTH_REFRESH_STORE_URL`` names; ``store migrate`` brings that store's
schema to this release's version (before a deploy, rather than on the first request). Reading
commands never create a store. Store URLs are printed without their passwords. Errors go to
stderr, one line each, with exit status 1; usage errors exit with 2 (argparse's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import secrets
import shlex
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from auth_refresh.exceptions import AuthRefreshError, ConfigurationError
from auth_refresh.settings import (
    DEFAULT_STORE_URL,
    HMAC_ALGORITHMS,
    SUPPORTED_ALGORITHMS,
    AuthRefreshSettings,
    build_settings,
    minimum_secret_bytes,
)
from auth_refresh.stores.base import (
    SESSION_PAGE_MAX,
    RefreshTokenStore,
    SessionCursor,
    SessionRecord,
)
from auth_refresh.stores.registry import open_store
from auth_refresh.stores.sqlite import SqliteRefreshTokenStore

__all__ = ["main"]

T = TypeVar("T")

RSA_BITS = 3072
TOKEN_TYPES = ("access", "refresh")
STORE_URL_VARIABLE = "AUTH_REFRESH_STORE_URL"
SESSION_COLUMNS = ("SESSION", "STARTED (UTC)", "LAST REFRESHED (UTC)", "CLIENT IP", "USER-AGENT")
# Query parameters whose values are secrets, by name (password=, sslpassword=, api_key=...).
SECRET_PARAMETER = re.compile(r"pass|pwd|secret|token|credential|key$|^auth$", re.IGNORECASE)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


class CommandError(Exception):
    """What stops a command, said in one line."""


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; the exit status."""
    arguments = _parser().parse_args(argv)
    with _store_warnings() as warnings:
        try:
            status: int = arguments.command(arguments)
        except (AuthRefreshError, OSError, CommandError) as error:
            # What the store logged says why (a connection refused, a TLS failure).
            _say(f"{error} ({warnings[-1]})" if warnings else str(error))
            return 1
        except Exception as error:  # an operator gets one line, never a traceback
            _say(f"{type(error).__name__}: {error}")
            return 1
    for warning in warnings:
        _say(f"warning: {warning}")
    return status


def _say(message: str) -> None:
    """One line on stderr, without the store URL's secrets."""
    line = " ".join(message.split())
    for secret in _secrets_of(os.environ.get(STORE_URL_VARIABLE, "")):
        line = line.replace(secret, "***")
    print(f"auth-refresh: {line}", file=sys.stderr)


@contextmanager
def _store_warnings() -> Iterator[list[str]]:
    """The warnings the library logs while a command runs, kept to be said in one line."""
    warnings: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            warnings.append(record.getMessage())

    logger = logging.getLogger("auth_refresh")
    handler = Keep(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield warnings
    finally:
        logger.removeHandler(handler)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="auth-refresh", description="Act on auth-refresh keys and sessions from a shell."
    )
    groups = parser.add_subparsers(required=True, metavar="{keys,sessions,store}")

    keys = groups.add_parser("keys", help="signing keys").add_subparsers(required=True)
    generate = keys.add_parser(
        "generate",
        help="make a key per token type and print the settings that use them",
        description="Makes a key per token type; prints `export` lines for the JWT_MODULE_* "
        "settings. Private keys go to 0600 PEM files in --directory; HMAC secrets are printed.",
    )
    generate.add_argument(
        "--algorithm",
        choices=SUPPORTED_ALGORITHMS,
        default="EdDSA",
        help="the signing algorithm (default: %(default)s)",
    )
    generate.add_argument(
        "--token-type",
        choices=TOKEN_TYPES,
        action="append",
        help="the token type to make a key for, repeatable (default: both)",
    )
    generate.add_argument("--kid", help="key id prefix (default: today's date and a random tag)")
    generate.add_argument(
        "--directory", type=Path, default=Path(), help="where PEM files go (default: .)"
    )
    generate.set_defaults(command=generate_keys)

    sessions = groups.add_parser("sessions", help="sessions in the store").add_subparsers(
        required=True
    )
    revoke = sessions.add_parser(
        "revoke-subject",
        help="revoke every session of a user (log out everywhere)",
        description="Revokes every token family of SUBJECT in the store AUTH_REFRESH_STORE_URL "
        f"names (default: {DEFAULT_STORE_URL}); their refresh tokens are refused from now on, "
        "their access tokens within AUTH_REFRESH_SESSION_CHECK_INTERVAL. Prints how many live "
        "sessions it ended.",
    )
    revoke.add_argument("subject", metavar="SUBJECT", help="the user id (the tokens' sub)")
    revoke.set_defaults(command=revoke_subject)
    listing = sessions.add_parser(
        "list",
        help="list a user's live sessions",
        description="Prints the live sessions of SUBJECT in the store AUTH_REFRESH_STORE_URL "
        f"names (default: {DEFAULT_STORE_URL}), newest first, under a header: id, started, "
        "last refreshed (UTC), client IP if kept, User-Agent.",
    )
    listing.add_argument("subject", metavar="SUBJECT", help="the user id (the tokens' sub)")
    listing.set_defaults(command=list_sessions)

    store = groups.add_parser("store", help="the token store").add_subparsers(required=True)
    migrate = store.add_parser(
        "migrate",
        help="bring the store's schema to this release's version",
        description="Migrates the store AUTH_REFRESH_STORE_URL names (default: "
        f"{DEFAULT_STORE_URL}) to this release's schema, creating it if there is none (stores "
        "also do it on first use); refuses a schema newer than this release's.",
    )
    migrate.set_defaults(command=migrate_store)
    return parser


def generate_keys(arguments: argparse.Namespace) -> int:
    algorithm: str = arguments.algorithm
    prefix = arguments.kid or f"{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(2)}"
    for token_type in arguments.token_type or TOKEN_TYPES:
        kid = f"{token_type}-{prefix}"
        if algorithm in HMAC_ALGORITHMS:
            material = {"secret": secrets.token_urlsafe(2 * minimum_secret_bytes(algorithm))}
        else:
            material = {
                "private_key_file": str(_write_key_pair(arguments.directory, kid, algorithm))
            }
        key = {"kid": kid, "algorithm": algorithm, **material}
        setting = f"JWT_MODULE_{token_type.upper()}"
        print(f"export {setting}_KEYS={shlex.quote(json.dumps([key]))}")
        print(f"export {setting}_SIGNING_KID={shlex.quote(kid)}")
    print(
        "# To rotate, add the new key to the existing *_KEYS list and set *_SIGNING_KID to it; "
        "drop the old key once its tokens have expired (docs/how-to/deploy.md).",
    )
    return 0


def _write_key_pair(directory: Path, kid: str, algorithm: str) -> Path:
    key = _private_key(algorithm)
    private_file = (directory / f"{kid}.pem").resolve()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # O_EXCL: never overwrite a key that may be signing tokens.
    descriptor = os.open(private_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_file.with_suffix(".pub.pem").write_bytes(public_pem)
    return private_file


def _private_key(algorithm: str) -> PrivateKey:
    if algorithm in {"RS256", "PS256"}:
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def revoke_subject(arguments: argparse.Namespace) -> int:
    subject: str = arguments.subject
    settings = _shared_store_settings()
    ended = _on_store(settings, lambda store: _revoke_subject(store, subject))
    where = _redacted(settings.store_url)
    print(f"revoked {ended} live session{'' if ended == 1 else 's'} of {subject!r} in {where}")
    return 0


async def _revoke_subject(store: RefreshTokenStore, subject: str) -> int:
    return await store.revoke_subject(subject, now=time.time())


def list_sessions(arguments: argparse.Namespace) -> int:
    subject: str = arguments.subject
    settings = _shared_store_settings()
    sessions = _on_store(settings, lambda store: _all_sessions(store, subject))
    if not sessions:
        print(f"no live session of {subject!r} in {_redacted(settings.store_url)}")
        return 0
    rows = [SESSION_COLUMNS, *(_columns(session) for session in sessions)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(SESSION_COLUMNS))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


async def _all_sessions(store: RefreshTokenStore, subject: str) -> list[SessionRecord]:
    # Page by page: no store step answers more than a page.
    sessions: list[SessionRecord] = []
    now = time.time()
    while True:
        after = SessionCursor.of(sessions[-1]) if sessions else None
        page = await store.list_sessions(subject, now=now, limit=SESSION_PAGE_MAX, after=after)
        sessions += page
        if len(page) < SESSION_PAGE_MAX:
            return sessions


def _columns(session: SessionRecord) -> tuple[str, ...]:
    return (
        session.session_id,
        _utc(session.created_at),
        _utc(session.last_refreshed_at),
        session.client_ip or "-",
        # One line per session, whatever the client sent.
        (session.user_agent or "-").encode("unicode_escape").decode("ascii"),
    )


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def migrate_store(arguments: argparse.Namespace) -> int:
    settings = _shared_store_settings()
    version = _on_store(settings, _migrate, create=True)
    where = _redacted(settings.store_url)
    if version is None:
        print(f"{where}: this store has no migrate(); it keeps its schema up to date itself")
    else:
        print(f"{where}: schema version {version}")
    return 0


async def _migrate(store: RefreshTokenStore) -> int | None:
    migrate = getattr(store, "migrate", None)
    if migrate is None:
        return None
    version: int = await migrate()
    return version


def _on_store(
    settings: AuthRefreshSettings,
    work: Callable[[RefreshTokenStore], Awaitable[T]],
    *,
    create: bool = False,
) -> T:
    """What ``work`` makes of the store ``settings`` name; only ``create`` makes a store
    where there is none."""
    store = open_store(settings.store_url)
    where = _redacted(settings.store_url)
    # A SQLite store is its file, made on first use: a mistyped path is no new store.
    if not create and isinstance(store, SqliteRefreshTokenStore) and not Path(store.path).exists():
        raise CommandError(f"no store at {where}: {store.path} does not exist")
    # The server stores create their schema at their first step: asked first (exists()).
    exists: Callable[[], Awaitable[bool]] | None = getattr(store, "exists", None)

    async def run() -> T:
        try:
            if not create and exists is not None and not await exists():
                raise CommandError(
                    f"no store at {where}: it holds no auth-refresh schema (one is made by "
                    "the application's first use, or by `auth-refresh store migrate`)"
                )
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except AuthRefreshError as error:
        raise CommandError(f"{where}: {error}") from None


def _shared_store_settings() -> AuthRefreshSettings:
    if not os.environ.get(STORE_URL_VARIABLE, "unset").strip():
        raise CommandError(f"{STORE_URL_VARIABLE} is empty: name the application's store")
    settings = build_settings(AuthRefreshSettings)
    if settings.store_url == "memory://":
        raise ConfigurationError(
            f"{STORE_URL_VARIABLE} is memory://: that store lives inside the application's "
            "process; name the application's SQLite file or Redis server"
        )
    return settings


def _redacted(url: str) -> str:
    """``url`` as it may be printed: no password in its user info nor in its query."""
    return _without_secrets(url)[0]


def _without_secrets(url: str) -> tuple[str, set[str]]:
    """``url`` with its password and secret query values as ``***``; and what they were."""
    found: set[str] = set()
    scheme, separator, rest = url.partition("://")
    before_query = re.split(r"[?#]", rest, maxsplit=1)[0]
    user_info, at, _ = before_query.rpartition("@")
    user, colon, password = user_info.partition(":")
    if at and colon:
        found.add(password)
        rest = f"{user}:***@{rest[len(user_info) + 1 :]}"
    address, question, query = rest.partition("?")
    parameters = []
    for parameter in query.split("&") if question else []:
        name, equals, value = parameter.partition("=")
        if equals and SECRET_PARAMETER.search(unquote(name)):
            found.add(value)
            parameter = f"{name}=***"
        parameters.append(parameter)
    return f"{scheme}{separator}{address}{question}{'&'.join(parameters)}", found


def _secrets_of(url: str) -> list[str]:
    """The secrets in ``url``, as written and decoded (as an error may quote them), longest
    first."""
    found = _without_secrets(url)[1]
    found |= {unquote(secret) for secret in found}
    return sorted(found - {""}, key=len, reverse=True)
