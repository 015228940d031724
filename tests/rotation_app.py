"""The tutorial's application with rotation: login starts a family, refresh rotates it, logout
revokes it; with a clock the test moves (the store's notion of now)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Awaitable, Mapping
from typing import Annotated, Any, Protocol

import httpx
from dependency_injector import providers
from fastapi import Depends, FastAPI

from auth_refresh import (
    AuthenticationModule,
    AuthJwtGuard,
    AuthJwtModule,
    AuthLocalModule,
    AuthRefreshModule,
    PasswordStorageService,
)
from factories import login


class Clock:
    """Now, as the test says: starts at the real time (Redis keys expire at real times)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def rotating_app(
    users: Any,
    password_storage: PasswordStorageService,
    *,
    settings: Mapping[str, Any] | None = None,
    clock: Clock | None = None,
    logout_path: str | None = "/auth/logout",
    sessions_path: str | None = None,
) -> tuple[FastAPI, AuthRefreshModule]:
    """POST /auth/login, /auth/refresh, /auth/logout and GET /me, over one refresh module
    (and the session routes under ``sessions_path``)."""
    authentication = AuthenticationModule.for_root()
    app = FastAPI()
    refresh = AuthRefreshModule.for_root(
        user_lookup_service=users,
        settings=settings,
        logout_path=logout_path,
        sessions_path=sessions_path,
    )
    if clock is not None:
        refresh.container.clock.override(providers.Object(clock))
    refresh.attach(app)
    AuthLocalModule.for_root(
        user_lookup_service=users,
        issue_token_service=refresh.login_issue_token_service,
        password_storage_service=password_storage,
    ).attach(app)
    AuthJwtModule.for_root(
        user_lookup_service=users, verify_token_service=authentication.verify_token_service
    ).attach(app)

    @app.get("/me")
    async def me(user: Annotated[Any, Depends(AuthJwtGuard())]) -> dict[str, str]:
        return {"id": user.id}

    return app, refresh


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/auth/refresh", json={"refreshToken": token})


def claims_of(token: str) -> dict[str, Any]:
    """What a token says, unverified: for assertions about our own tokens only."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def assert_store_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"statusCode", "errorCode", "message", "timestamp"}
    assert body["statusCode"] == 503
    assert body["errorCode"] == "AUTH_REFRESH_STORE_UNAVAILABLE_ERROR"
    assert "eyJ" not in response.text


# What the issue promises a client: an answer within 2 s whatever the store does.
ANSWER_WITHIN_SECONDS = 2.0


async def timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await request
    return response, time.monotonic() - started


class StoreServer(Protocol):
    def stop(self) -> None: ...
    def start(self) -> None: ...


async def check_a_stopped_server_then_back(client: httpx.AsyncClient, server: StoreServer) -> None:
    """With the store's server stopped, a refresh and a login are 503s within
    ``ANSWER_WITHIN_SECONDS``; once it is back, the same token rotates, and its successor too."""
    token = (await login(client))["refreshToken"]
    server.stop()
    response, elapsed = await timed(refresh(client, token))
    assert_store_unavailable(response)
    assert elapsed < ANSWER_WITHIN_SECONDS
    credentials = {"username": "user@example.com", "password": "password"}
    assert_store_unavailable(await client.post("/auth/login", json=credentials))
    server.start()
    rotated = await refresh(client, token)
    assert rotated.status_code == 200
    assert (await refresh(client, rotated.json()["refreshToken"])).status_code == 200
