"""Without a lifespan (issue 23, item 3): modules included with ``include_router`` alone, served
by a bare ``httpx.ASGITransport`` or a ``TestClient`` used without ``with``. The first request
that needs a module starts the application's modules, with the error handler already in place:
every refusal is the documented 4xx, never a RuntimeError or a 500, from the first request on."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient

from auth_refresh import (
    AuthJwtGuard,
    AuthJwtModule,
    AuthLocalModule,
    AuthRefreshGuard,
    AuthRefreshModule,
    PasswordStorageService,
)
from conftest import InMemoryUsers
from factories import assert_unauthorized

pytestmark = pytest.mark.anyio

CREDENTIALS = {"username": "user@example.com", "password": "password"}


def included_app(
    users: InMemoryUsers, storage: PasswordStorageService, refresh: AuthRefreshModule | None = None
) -> tuple[FastAPI, AuthRefreshModule]:
    """Every module by ``include_router`` and no lifespan run: login, refresh, logout, the
    sessions, and a route behind each guard."""
    refresh = refresh or AuthRefreshModule.for_root(
        user_lookup_service=users, logout_path="/auth/logout", sessions_path="/auth/sessions"
    )
    app = FastAPI()
    app.include_router(refresh.router)
    app.include_router(
        AuthLocalModule.for_root(user_lookup_service=users, password_storage_service=storage).router
    )
    app.include_router(AuthJwtModule.for_root(user_lookup_service=users).router)

    @app.get("/me")
    async def me(user: Annotated[Any, Depends(AuthJwtGuard())]) -> dict[str, str]:
        return {"id": user.id}

    @app.post("/session")
    async def session(user: Annotated[Any, Depends(AuthRefreshGuard())], request: Request) -> Any:
        return refresh.token_response(await refresh.issue(user, request))

    return app, refresh


def client_of(app: FastAPI) -> httpx.AsyncClient:
    # raise_app_exceptions (the default): an unhandled error fails the test instead of a 500.
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"statusCode", "errorCode", "message", "timestamp"}
    assert body["errorCode"] == code


FIRST_REQUESTS = {
    "bad refresh": (("POST", "/auth/refresh", {"refreshToken": "x"}), 401, "NOT_AUTHORIZED"),
    "no refresh token": (("POST", "/auth/refresh", None), 401, "NOT_AUTHORIZED"),
    "bad logout": (("POST", "/auth/logout", {"refreshToken": "x"}), 401, "NOT_AUTHORIZED"),
    "bad password": (
        ("POST", "/auth/login", {"username": "user@example.com", "password": "no"}),
        401,
        "AUTH_LOCAL_INVALID_CREDENTIALS",
    ),
    "empty login": (("POST", "/auth/login", {}), 400, "AUTH_REFRESH_INVALID_REQUEST"),
    "access guard": (("GET", "/me", None), 401, "AUTH_JWT_NOT_AUTHORIZED"),
    "refresh guard": (("POST", "/session", {"refreshToken": "x"}), 401, "NOT_AUTHORIZED"),
    "sessions": (("GET", "/auth/sessions", None), 401, "AUTH_JWT_NOT_AUTHORIZED"),
}


@pytest.mark.parametrize("first", list(FIRST_REQUESTS))
async def test_the_first_request_is_refused_as_documented(
    users: InMemoryUsers, password_storage: PasswordStorageService, first: str
) -> None:
    (method, path, body), status, code = FIRST_REQUESTS[first]
    app, _ = included_app(users, password_storage)
    async with client_of(app) as client:
        for _ in range(2):  # the first and the next alike
            response = await client.request(method, path, json=body)
            assert response.status_code == status, response.text
            assert code in response.json()["errorCode"]


async def test_every_route_and_guard_works_over_a_bare_transport(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = included_app(users, password_storage)
    async with client_of(app) as client:
        assert_unauthorized(await client.post("/auth/refresh", json={"refreshToken": "x"}))
        pair = (await client.post("/auth/login", json=CREDENTIALS)).json()
        refreshed = await client.post("/auth/refresh", json={"refreshToken": pair["refreshToken"]})
        assert refreshed.status_code == 200, refreshed.text
        pair = refreshed.json()
        bearer = {"Authorization": "Bearer " + pair["accessToken"]}
        assert (await client.get("/me", headers=bearer)).json() == {"id": "user-1"}
        sessions = await client.get("/auth/sessions", headers=bearer)
        assert sessions.status_code == 200
        assert len(sessions.json()) == 1
        session = await client.post("/session", json={"refreshToken": pair["refreshToken"]})
        assert session.status_code == 200, session.text
        successor = session.json()["refreshToken"]
        logout = await client.post("/auth/logout", json={"refreshToken": successor})
        assert logout.status_code == 204
        # The session is over: its access token too.
        assert_error(await client.get("/me", headers=bearer), 401, "AUTH_JWT_NOT_AUTHORIZED_ERROR")


def test_a_test_client_without_with_works(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = included_app(users, password_storage)
    client = TestClient(app)
    assert client.get("/me").status_code == 401
    bad = client.post("/auth/refresh", json={"refreshToken": "x"})
    assert bad.status_code == 401
    assert bad.json()["statusCode"] == 401
    pair = client.post("/auth/login", json=CREDENTIALS).json()
    bearer = {"Authorization": "Bearer " + pair["accessToken"]}
    assert client.get("/me", headers=bearer).json() == {"id": "user-1"}
    refreshed = client.post("/auth/refresh", json={"refreshToken": pair["refreshToken"]})
    assert refreshed.status_code == 200, refreshed.text
    session = client.post("/session", json={"refreshToken": refreshed.json()["refreshToken"]})
    assert session.status_code == 200, session.text
    assert client.get("/auth/sessions", headers=bearer).status_code == 200


async def test_a_revoked_session_is_refused_when_the_access_guard_comes_first(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    # The access guard asks the global refresh registration about the session: it must have
    # been found and started though no request reached its routes.
    app, refresh = included_app(users, password_storage)
    pair = await refresh.issue_for_subject("user-1")
    await refresh.revoke_subject("user-1")
    async with client_of(app) as client:
        bearer = {"Authorization": "Bearer " + pair["accessToken"]}
        assert_error(await client.get("/me", headers=bearer), 401, "AUTH_JWT_NOT_AUTHORIZED_ERROR")


async def test_concurrent_first_requests_start_the_modules_once(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    calls = 0

    async def options() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)  # the others arrive while it runs
        return {"user_lookup_service": users}

    refresh = AuthRefreshModule.for_root_async(factory=options, logout_path="/auth/logout")
    app, _ = included_app(users, password_storage, refresh)
    async with client_of(app) as client:
        answers = await asyncio.gather(
            *(client.post("/auth/refresh", json={"refreshToken": "x"}) for _ in range(5)),
            *(client.get("/me") for _ in range(5)),
            *(client.post("/session", json={"refreshToken": "x"}) for _ in range(5)),
        )
        assert [answer.status_code for answer in answers] == [401] * 15
        assert (await client.post("/auth/login", json=CREDENTIALS)).status_code == 200
    assert calls == 1
