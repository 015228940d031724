"""POST /auth/login: credentials as JSON or a form, and refusals that never echo the password."""

from typing import Any

import pytest
from fastapi import FastAPI

from auth_refresh import AuthenticationModule, AuthLocalModule, PasswordStorageService
from conftest import InMemoryUsers, User, serve

pytestmark = pytest.mark.anyio

SECRET_PASSWORD = "wrong-but-very-secret-password"


class CountingPasswordStorage(PasswordStorageService):
    """The real argon2 storage, counting how many hashes it verified."""

    def __init__(self) -> None:
        super().__init__()
        self.verifications = 0

    def verify(self, password: str, password_hash: str | None) -> bool:
        self.verifications += 1
        return super().verify(password, password_hash)


def login_app(users: Any, storage: PasswordStorageService) -> FastAPI:
    app = FastAPI()
    AuthLocalModule.for_root(
        user_lookup_service=users,
        issue_token_service=AuthenticationModule.for_root().issue_token_service,
        password_storage_service=storage,
    ).attach(app)
    return app


@pytest.mark.parametrize("as_form", [False, True])
async def test_login_answers_a_token_pair(
    users: InMemoryUsers, password_storage: PasswordStorageService, as_form: bool
) -> None:
    credentials = {"username": "user@example.com", "password": "password"}
    body = {"data": credentials} if as_form else {"json": credentials}
    async with serve(login_app(users, password_storage)) as client:
        response = await client.post("/auth/login", **body)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    pair = response.json()
    verify = AuthenticationModule.for_root().verify_token_service
    assert verify.access_token(pair["accessToken"])["sub"] == "user-1"
    assert verify.refresh_token(pair["refreshToken"])["sub"] == "user-1"


@pytest.mark.parametrize("username", ["user@example.com", "nobody@example.com"])
async def test_wrong_credentials_are_a_401_that_never_echoes_the_password(
    users: InMemoryUsers, username: str
) -> None:
    storage = CountingPasswordStorage()
    async with serve(login_app(users, storage)) as client:
        response = await client.post(
            "/auth/login", json={"username": username, "password": SECRET_PASSWORD}
        )
    assert response.status_code == 401
    assert response.json()["errorCode"] == "AUTH_LOCAL_INVALID_CREDENTIALS_ERROR"
    assert response.json()["message"] == "Invalid username or password"
    assert SECRET_PASSWORD not in response.text
    assert "eyJ" not in response.text
    # An unknown user costs a hash verification too, so timing does not reveal usernames.
    assert storage.verifications == 1


@pytest.mark.parametrize(
    "request_options",
    [
        {"json": {"username": "user@example.com"}},
        {"json": {"password": SECRET_PASSWORD}},
        {"json": {"username": "user@example.com", "password": 12345}},
        {"json": {"username": ["user@example.com"], "password": SECRET_PASSWORD}},
        {"json": {"username": "", "password": SECRET_PASSWORD}},
        {"json": [SECRET_PASSWORD]},
        {"json": {"username": "u" * 321, "password": SECRET_PASSWORD}},
        {"json": {"username": "user@example.com", "password": SECRET_PASSWORD * 200}},
        {
            "content": b'{"password": "' + SECRET_PASSWORD.encode(),
            "headers": {"content-type": "application/json"},
        },
        {"content": SECRET_PASSWORD.encode(), "headers": {"content-type": "text/plain"}},
        {},
    ],
    ids=[
        "no-password",
        "no-username",
        "number",
        "list",
        "empty",
        "array",
        "long-user",
        "long-password",
        "bad-json",
        "text",
        "no-body",
    ],
)
async def test_malformed_logins_are_a_400_that_never_echoes_input(
    users: InMemoryUsers, password_storage: PasswordStorageService, request_options: Any
) -> None:
    async with serve(login_app(users, password_storage)) as client:
        response = await client.post("/auth/login", **request_options)
    assert response.status_code == 400
    assert response.json()["errorCode"] == "AUTH_REFRESH_INVALID_REQUEST_ERROR"
    assert SECRET_PASSWORD not in response.text


async def test_a_corrupt_stored_hash_never_matches(
    password_storage: PasswordStorageService,
) -> None:
    users = InMemoryUsers(User("user-1", "user@example.com", "not-a-hash"))
    async with serve(login_app(users, password_storage)) as client:
        response = await client.post(
            "/auth/login", json={"username": "user@example.com", "password": "password"}
        )
    assert response.status_code == 401


async def test_async_lookups_and_mapping_users(password_storage: PasswordStorageService) -> None:
    stored = {"id": 7, "password_hash": password_storage.hash("pw-of-seven")}

    class AsyncUsers:
        async def by_username(self, username: str) -> dict[str, Any] | None:
            return stored if username == "seven" else None

    async with serve(login_app(AsyncUsers(), password_storage)) as client:
        response = await client.post(
            "/auth/login", json={"username": "seven", "password": "pw-of-seven"}
        )
    assert response.status_code == 200
    claims = AuthenticationModule.for_root().verify_token_service.access_token(
        response.json()["accessToken"]
    )
    assert claims["sub"] == "7"


def test_passwords_are_hashed_with_argon2(password_storage: PasswordStorageService) -> None:
    hashed = password_storage.hash("password")
    assert hashed.startswith("$argon2id$")
    assert password_storage.verify("password", hashed)
    assert not password_storage.verify("Password", hashed)


@pytest.mark.parametrize("active", [False, 0])
async def test_an_inactive_user_cannot_log_in_even_with_the_right_password(
    password_storage: PasswordStorageService, active: object
) -> None:
    stored = {"id": "user-1", "password_hash": password_storage.hash("password"), "active": active}

    class Users:
        def by_username(self, username: str) -> dict[str, Any]:
            return stored

    async with serve(login_app(Users(), password_storage)) as client:
        response = await client.post(
            "/auth/login", json={"username": "user@example.com", "password": "password"}
        )
        assert response.status_code == 401
        assert response.json()["errorCode"] == "AUTH_LOCAL_INVALID_CREDENTIALS_ERROR"
        stored["active"] = True
        enabled = await client.post(
            "/auth/login", json={"username": "user@example.com", "password": "password"}
        )
        assert enabled.status_code == 200
