"""The operator's command line: ``auth-refresh`` (or ``python -m auth_refresh``).

``keys generate`` makes signing keys and prints the ``JWT_MODULE_*`` settings that use them;
``sessions list`` shows a user's live sessions and ``sessions revoke-subject`` logs a user out
everywhere, in the store ``AUTH_REFRESH_STORE_URL`` names; ``store migrate`` brings that store's
schema to this release's version (before a deploy, rather than on the first request). Errors go
to stderr with exit status 1; usage errors exit with 2 (argparse's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shlex
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from auth_refresh.exceptions import AuthRefreshError, ConfigurationError
from auth_refresh.settings import (
    HMAC_ALGORITHMS,
    SUPPORTED_ALGORITHMS,
    AuthRefreshSettings,
    build_settings,
    minimum_secret_bytes,
)
from auth_refresh.stores.base import SESSION_PAGE_MAX, SessionCursor, SessionRecord
from auth_refresh.stores.registry import open_store

__all__ = ["main"]

RSA_BITS = 3072
TOKEN_TYPES = ("access", "refresh")

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; the exit status."""
    arguments = _parser().parse_args(argv)
    try:
        status: int = arguments.command(arguments)
    except (AuthRefreshError, OSError) as error:
        print(f"auth-refresh: {error}", file=sys.stderr)
        return 1
    return status


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
    generate.add_argument("--algorithm", choices=SUPPORTED_ALGORITHMS, default="EdDSA")
    generate.add_argument(
        "--token-type", choices=TOKEN_TYPES, action="append", help="default: both"
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
        "names; their refresh tokens are refused from now on, their access tokens within "
        "AUTH_REFRESH_SESSION_CHECK_INTERVAL.",
    )
    revoke.add_argument("subject", metavar="SUBJECT", help="the user id (the tokens' sub)")
    revoke.set_defaults(command=revoke_subject)
    listing = sessions.add_parser(
        "list",
        help="list a user's live sessions",
        description="Prints the live sessions of SUBJECT in the store AUTH_REFRESH_STORE_URL "
        "names, newest first: id, started, last refreshed (UTC), client IP if kept, User-Agent.",
    )
    listing.add_argument("subject", metavar="SUBJECT", help="the user id (the tokens' sub)")
    listing.set_defaults(command=list_sessions)

    store = groups.add_parser("store", help="the token store").add_subparsers(required=True)
    migrate = store.add_parser(
        "migrate",
        help="bring the store's schema to this release's version",
        description="Migrates the store AUTH_REFRESH_STORE_URL names to this release's schema "
        "(stores also do it on first use); refuses a schema newer than this release's.",
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
    asyncio.run(_revoke_subject(settings, subject))
    print(f"revoked every session of {subject!r} in {_redacted(settings.store_url)}")
    return 0


def list_sessions(arguments: argparse.Namespace) -> int:
    subject: str = arguments.subject
    settings = _shared_store_settings()
    sessions = asyncio.run(_list_sessions(settings, subject))
    for session in sessions:
        columns = [
            session.session_id,
            _utc(session.created_at),
            _utc(session.last_refreshed_at),
            session.client_ip or "-",
            # One line per session, whatever the client sent.
            (session.user_agent or "-").encode("unicode_escape").decode("ascii"),
        ]
        print("  ".join(columns))
    if not sessions:
        print(f"no live session of {subject!r} in {_redacted(settings.store_url)}")
    return 0


async def _list_sessions(settings: AuthRefreshSettings, subject: str) -> list[SessionRecord]:
    store = open_store(settings.store_url)
    try:
        sessions: list[SessionRecord] = []
        now = time.time()
        while True:
            after = SessionCursor.of(sessions[-1]) if sessions else None
            page = await store.list_sessions(subject, now=now, limit=SESSION_PAGE_MAX, after=after)
            sessions += page
            if len(page) < SESSION_PAGE_MAX:
                return sessions
    finally:
        await store.close()


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _revoke_subject(settings: AuthRefreshSettings, subject: str) -> None:
    store = open_store(settings.store_url)
    try:
        await store.revoke_subject(subject, now=time.time())
    finally:
        await store.close()


def migrate_store(arguments: argparse.Namespace) -> int:
    settings = _shared_store_settings()
    version = asyncio.run(_migrate(settings))
    where = _redacted(settings.store_url)
    if version is None:
        print(f"{where}: this store has no migrate(); it keeps its schema up to date itself")
    else:
        print(f"{where}: schema version {version}")
    return 0


async def _migrate(settings: AuthRefreshSettings) -> int | None:
    store = open_store(settings.store_url)
    try:
        migrate = getattr(store, "migrate", None)
        if migrate is None:
            return None
        version: int = await migrate()
        return version
    finally:
        await store.close()


def _shared_store_settings() -> AuthRefreshSettings:
    settings = build_settings(AuthRefreshSettings)
    if settings.store_url == "memory://":
        raise ConfigurationError(
            "AUTH_REFRESH_STORE_URL is memory://: that store lives inside the application's "
            "process; name the application's SQLite file or Redis server"
        )
    return settings


def _redacted(url: str) -> str:
    """The store URL without a password (redis://:secret@host)."""
    scheme, separator, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    return f"{scheme}{separator}{'***@' if at else ''}{host}" if credentials else url
