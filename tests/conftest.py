"""Shared fixtures: secrets, an in-memory user store, and a client that runs the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from auth_refresh import PasswordStorageService

# Redis servers and store URLs for the rotation tests (tests/store_fixtures.py).
pytest_plugins = ["store_fixtures"]

ACCESS_SECRET = "access-secret-for-tests-0123456789abcdef"
REFRESH_SECRET = "refresh-secret-for-tests-0123456789abcdef"


# What a test needs to be marked "servers" (make quick leaves out "servers" and "processes"):
# a fixture that starts a server, or a parameter naming a store kind that has one.
SERVER_FIXTURES = frozenset(
    {
        "redis_url",
        "redis_cluster_url",
        "postgres_server",
        "postgres_url",
        "counting_postgres",
        "faulty_postgres",
    }
)
SERVER_KINDS = frozenset({"redis", "postgres", "redis-cluster"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        values = {str(value) for value in callspec.params.values()} if callspec else set()
        fixtures = set(getattr(item, "fixturenames", ()))
        if SERVER_FIXTURES & fixtures or SERVER_KINDS & values:
            item.add_marker(pytest.mark.servers)


LEFTOVER_PATTERNS = ("*.db", "*.db-wal", "*.db-shm", "auth-refresh-dev-secrets.json")


def _leftovers(directory: Path) -> set[Path]:
    return {path for pattern in LEFTOVER_PATTERNS for path in directory.glob(pattern)}


@pytest.fixture(scope="session", autouse=True)
def nothing_left_in_the_working_directory() -> Iterator[None]:
    """Tests and doc snippets write their databases under temporary directories only."""
    directories = {Path.cwd(), Path(__file__).resolve().parent.parent}
    before = {directory: _leftovers(directory) for directory in directories}
    yield
    left = sorted(str(p) for d in directories for p in _leftovers(d) - before[d])
    assert not left, f"the tests left files behind: {left}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def jwt_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts from the same JWT environment and no other AUTH_REFRESH_* variables."""
    import os

    for name in list(os.environ):
        if name.startswith(("JWT_MODULE_", "AUTH_REFRESH_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("JWT_MODULE_ACCESS_SECRET", ACCESS_SECRET)
    monkeypatch.setenv("JWT_MODULE_REFRESH_SECRET", REFRESH_SECRET)
    # Token families in memory unless a test names a store: none writes ./auth-refresh.db.
    monkeypatch.setenv("AUTH_REFRESH_STORE_URL", "memory://")


@pytest.fixture(autouse=True)
def postgres_without_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded PostgreSQL speaks no TLS. asyncpg's default ``sslmode=prefer`` asks first, and
    a connect cancelled at that moment leaves a future whose exception nobody retrieves (an
    asyncpg race), which anyio's runner raises in whichever test is running."""
    monkeypatch.setenv("PGSSLMODE", "disable")


@dataclass
class User:
    id: str
    username: str
    password_hash: str = ""


class InMemoryUsers:
    """A real user store, small enough for tests: lookups by subject and by username."""

    def __init__(self, *users: User) -> None:
        self.users = {user.id: user for user in users}
        self.subject_lookups: list[str] = []

    def by_subject(self, subject: str) -> User | None:
        self.subject_lookups.append(subject)
        return self.users.get(subject)

    def by_username(self, username: str) -> User | None:
        return next((u for u in self.users.values() if u.username == username), None)


_PASSWORDS = PasswordStorageService()
_PASSWORD_HASH = _PASSWORDS.hash("password")


@pytest.fixture(scope="session")
def password_storage() -> PasswordStorageService:
    return _PASSWORDS


@pytest.fixture
def users() -> InMemoryUsers:
    return InMemoryUsers(User("user-1", "user@example.com", _PASSWORD_HASH))


@asynccontextmanager
async def serve(app: FastAPI, **client_options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for ``app`` with its lifespan running, over httpx's ASGI transport."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        options = {"base_url": "http://testserver", **client_options}
        async with httpx.AsyncClient(transport=transport, **options) as client:
            yield client
