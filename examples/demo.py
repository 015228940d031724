"""What both examples share: the demo user, development secrets and the server entry point."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from auth_refresh import PasswordStorageService
from auth_refresh.settings import DEFAULT_STORE_URL

DEMO_USERNAME = "user@example.com"
DEMO_PASSWORD = "password"
DEMO_USER_ID = "user-1"


@dataclass(frozen=True)
class DemoUser:
    id: str
    username: str
    password_hash: str


class DemoUsers:
    """One user in memory; serves the login, access-token and refresh lookups."""

    def __init__(self, *users: DemoUser) -> None:
        self._by_id = {user.id: user for user in users}
        self._by_username = {user.username: user for user in users}

    @classmethod
    def with_demo_user(cls, passwords: PasswordStorageService | None = None) -> DemoUsers:
        passwords = passwords or PasswordStorageService()
        return cls(DemoUser(DEMO_USER_ID, DEMO_USERNAME, passwords.hash(DEMO_PASSWORD)))

    async def by_subject(self, subject: str) -> DemoUser | None:
        return self._by_id.get(subject)

    async def by_username(self, username: str) -> DemoUser | None:
        return self._by_username.get(username)


SECRET_NAMES = ("JWT_MODULE_ACCESS_SECRET", "JWT_MODULE_REFRESH_SECRET")
DEVELOPMENT_SECRETS_FILE = "auth-refresh-dev-secrets.json"


def development_secrets_path() -> Path:
    """Beside the SQLite database the store URL names (else in the working directory)."""
    url = os.environ.get("AUTH_REFRESH_STORE_URL") or DEFAULT_STORE_URL
    database = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else Path()
    return database.parent / DEVELOPMENT_SECRETS_FILE


def ensure_development_secrets() -> None:
    """Development secrets where ``JWT_MODULE_*`` are unset: for the examples only.

    They are kept in a 0600 file beside the database, so every worker process and every restart
    signs with the same secrets (a secret per process would refuse the other workers' tokens).
    """
    unset = [name for name in SECRET_NAMES if not os.environ.get(name)]
    if not unset:
        return
    path = development_secrets_path()
    stored = _load_or_create(path)
    for name in unset:
        os.environ[name] = stored[name]
        print(
            f"WARNING: {name} is not set; using a development secret kept in {path} (mode 0600), "
            "shared by every worker and restart. Never run like this in production.",
            file=sys.stderr,
            flush=True,
        )


def _load_or_create(path: Path) -> dict[str, str]:
    if not path.exists():
        fresh = {name: secrets.token_urlsafe(48) for name in SECRET_NAMES}
        # Written whole under a temporary name, then linked into place: workers starting together
        # race for the link, and every one of them reads the winner's secrets.
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".dev-secrets-")
        try:
            with os.fdopen(descriptor, "w") as file:  # mkstemp creates it with mode 0600
                json.dump(fresh, file)
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise SystemExit(f"{path} is readable by others (mode {mode:o}): chmod 600 it or delete it")
    stored: dict[str, str] = json.loads(path.read_text())
    return stored


def run(app: FastAPI) -> None:
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "3000")))
