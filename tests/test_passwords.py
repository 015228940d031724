"""Login diagnostics: the password attribute's name, hashes no hasher knows, bcrypt migration."""

import logging
from dataclasses import dataclass
from typing import Any

import bcrypt
import pytest
from fastapi import FastAPI
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from auth_refresh import AuthenticationModule, AuthLocalModule, PasswordStorageService
from conftest import InMemoryUsers, User, serve

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery staple"
CREDENTIALS = {"username": "user@example.com", "password": PASSWORD}
BCRYPT_HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
PBKDF2_HASH = "$pbkdf2-sha256$29000$N2bMWat1rrV2rrXWGoMwBg$Lu6ymRkEdSy1mC03WjV8Dp2hdhIxYw"


@dataclass
class TutorialUser:
    """The FastAPI tutorial's model: the hash is ``hashed_password``."""

    id: str
    username: str
    hashed_password: str


class TutorialUsers:
    def __init__(self, user: TutorialUser) -> None:
        self.user = user

    def by_username(self, username: str) -> TutorialUser | None:
        return self.user if username == self.user.username else None


class MigratingUsers(InMemoryUsers):
    """A user store that can replace a user's hash (``update_password_hash``)."""

    def __init__(self, *users: User) -> None:
        super().__init__(*users)
        self.updates: list[str] = []

    def update_password_hash(self, user: User, password_hash: str) -> None:
        self.updates.append(password_hash)
        user.password_hash = password_hash


def login_app(users: Any, storage: PasswordStorageService | None = None, **options: Any) -> FastAPI:
    app = FastAPI()
    AuthLocalModule.for_root(
        user_lookup_service=users,
        issue_token_service=AuthenticationModule.for_root().issue_token_service,
        password_storage_service=storage,
        **options,
    ).attach(app)
    return app


def login_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "auth_refresh.login" and record.levelno == logging.WARNING
    ]


async def test_the_password_attribute_is_an_option(
    password_storage: PasswordStorageService,
) -> None:
    user = TutorialUser("user-1", "user@example.com", password_storage.hash(PASSWORD))
    app = login_app(TutorialUsers(user), password_storage, password_attribute="hashed_password")
    async with serve(app) as client:
        response = await client.post("/auth/login", json=CREDENTIALS)
    assert response.status_code == 200


async def test_a_user_without_the_attribute_is_logged_once(
    password_storage: PasswordStorageService, caplog: pytest.LogCaptureFixture
) -> None:
    user = TutorialUser("user-1", "user@example.com", password_storage.hash(PASSWORD))
    async with serve(login_app(TutorialUsers(user), password_storage)) as client:
        statuses = [(await client.post("/auth/login", json=CREDENTIALS)).status_code]
        statuses.append((await client.post("/auth/login", json=CREDENTIALS)).status_code)
    assert statuses == [401, 401]
    [warning] = login_warnings(caplog)
    assert "TutorialUser user has no 'password_hash' attribute" in warning
    assert "password_attribute=" in warning
    assert PASSWORD not in caplog.text
    assert user.hashed_password not in caplog.text


@pytest.mark.parametrize(
    ("stored", "named"),
    [(PBKDF2_HASH, "$pbkdf2-sha256$"), (PASSWORD, "(no $scheme$ prefix)")],
    ids=["pbkdf2", "plain-text"],
)
async def test_a_hash_no_hasher_recognises_is_logged_once(
    stored: str, named: str, caplog: pytest.LogCaptureFixture
) -> None:
    users = InMemoryUsers(User("user-1", "user@example.com", stored))
    async with serve(login_app(users)) as client:
        for _ in range(3):
            response = await client.post("/auth/login", json=CREDENTIALS)
            assert response.status_code == 401
    [warning] = login_warnings(caplog)
    assert f"in the format {named} is recognised by no configured hasher" in warning
    assert stored not in caplog.text.replace(named, "")
    assert PASSWORD not in caplog.text


async def test_without_the_bcrypt_hasher_a_bcrypt_hash_says_what_to_install(
    caplog: pytest.LogCaptureFixture,
) -> None:
    argon2_only = PasswordStorageService(PasswordHash([Argon2Hasher()]))
    users = InMemoryUsers(User("user-1", "user@example.com", BCRYPT_HASH))
    async with serve(login_app(users, argon2_only)) as client:
        response = await client.post("/auth/login", json=CREDENTIALS)
    assert response.status_code == 401
    [warning] = login_warnings(caplog)
    assert "$2b$" in warning
    assert "install auth-refresh[bcrypt]" in warning
    assert BCRYPT_HASH not in caplog.text


async def test_a_bcrypt_hash_verifies_and_is_rehashed_to_argon2() -> None:
    users = MigratingUsers(User("user-1", "user@example.com", BCRYPT_HASH))
    async with serve(login_app(users)) as client:
        first = await client.post("/auth/login", json=CREDENTIALS)
        second = await client.post("/auth/login", json=CREDENTIALS)
        wrong = await client.post("/auth/login", json={**CREDENTIALS, "password": "nope"})
    assert [first.status_code, second.status_code, wrong.status_code] == [200, 200, 401]
    [new_hash] = users.updates  # the argon2 hash needs no second update
    assert new_hash.startswith("$argon2id$")
    assert users.users["user-1"].password_hash == new_hash


async def test_a_bcrypt_hash_verifies_without_an_update_method() -> None:
    users = InMemoryUsers(User("user-1", "user@example.com", BCRYPT_HASH))
    async with serve(login_app(users)) as client:
        response = await client.post("/auth/login", json=CREDENTIALS)
    assert response.status_code == 200
    assert users.users["user-1"].password_hash == BCRYPT_HASH


async def test_a_wrong_password_on_a_bcrypt_hash_is_not_rehashed() -> None:
    users = MigratingUsers(User("user-1", "user@example.com", BCRYPT_HASH))
    async with serve(login_app(users)) as client:
        response = await client.post("/auth/login", json={**CREDENTIALS, "password": "wrong"})
    assert response.status_code == 401
    assert users.updates == []
