"""What both examples share: the demo user, development secrets and the server entry point."""

from __future__ import annotations

import os
import secrets
import sys
from dataclasses import dataclass

from fastapi import FastAPI

from auth_refresh import PasswordStorageService

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


def ensure_development_secrets() -> None:
    """Random per-process secrets where ``JWT_MODULE_*`` are unset: for the examples only."""
    for name in ("JWT_MODULE_ACCESS_SECRET", "JWT_MODULE_REFRESH_SECRET"):
        if not os.environ.get(name):
            os.environ[name] = secrets.token_urlsafe(48)
            print(
                f"WARNING: {name} is not set; using a random secret for this process only. "
                "Tokens will not survive a restart. Never run like this in production.",
                file=sys.stderr,
                flush=True,
            )


def run(app: FastAPI) -> None:
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "3000")))
