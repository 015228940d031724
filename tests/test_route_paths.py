"""The refresh cookie's Path is where the routes really are (issue 23, item 1): behind a router
prefix, the server's root path, FastAPI's own root_path behind a proxy, and a mounted
sub-application; each checked with a client that keeps cookies by their Path, as a browser
does, logging in, refreshing and logging out by the cookie alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.cookies import SimpleCookie
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from starlette.types import Receive, Scope, Send

from auth_refresh import (
    AuthJwtGuard,
    AuthJwtModule,
    AuthLocalModule,
    AuthRefreshGuard,
    AuthRefreshModule,
    PasswordStorageService,
)
from conftest import InMemoryUsers

pytestmark = pytest.mark.anyio

CREDENTIALS = {"username": "user@example.com", "password": "password"}


def cookie_api(
    users: InMemoryUsers,
    storage: PasswordStorageService,
    *,
    prefix: str = "",
    login_prefix: str | None = None,
    **app_options: Any,
) -> tuple[FastAPI, AuthRefreshModule]:
    """Login, refresh, logout and the sessions with cookie transport, each module's router
    included with ``prefix`` (the login's with ``login_prefix``), and two routes of its own."""
    app = FastAPI(**app_options)
    refresh = AuthRefreshModule.for_root(
        user_lookup_service=users,
        logout_path="/auth/logout",
        sessions_path="/auth/sessions",
        settings={"cookie_transport": True},
    )
    login = AuthLocalModule.for_root(user_lookup_service=users, password_storage_service=storage)
    app.include_router(refresh.router, prefix=prefix)
    app.include_router(login.router, prefix=prefix if login_prefix is None else login_prefix)
    app.include_router(AuthJwtModule.for_root(user_lookup_service=users).router, prefix=prefix)

    @app.get(prefix + "/me")
    async def me(user: Annotated[Any, Depends(AuthJwtGuard())]) -> dict[str, str]:
        return {"id": user.id}

    @app.post(prefix + "/session")
    async def session(user: Annotated[Any, Depends(AuthRefreshGuard())], request: Request) -> Any:
        return refresh.token_response(await refresh.issue(user, request))

    return app, refresh


def refresh_cookie_paths(response: httpx.Response) -> set[str]:
    paths = set()
    for header in response.headers.get_list("set-cookie"):
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(header)
        if "refresh_token" in cookie:
            paths.add(cookie["refresh_token"]["path"])
    return paths


async def log_in_refresh_and_out(client: httpx.AsyncClient, base: str, login_base: str) -> None:
    """The browser's walk: the refresh token only ever travels in the cookie."""
    login = await client.post(login_base + "/auth/login", json=CREDENTIALS)
    assert login.status_code == 200, login.text
    assert "refreshToken" not in login.json()
    assert refresh_cookie_paths(login) == {base + "/auth/refresh", base + "/auth/logout"}
    csrf = {"X-CSRF-Token": login.json()["csrfToken"]}
    bearer = {"Authorization": "Bearer " + login.json()["accessToken"]}
    assert (await client.get(base + "/me", headers=bearer)).json() == {"id": "user-1"}

    # No body: the client sent the cookie because its Path covers the route.
    refreshed = await client.post(base + "/auth/refresh", headers=csrf)
    assert refreshed.status_code == 200, refreshed.text
    assert refresh_cookie_paths(refreshed) == {base + "/auth/refresh", base + "/auth/logout"}
    bearer = {"Authorization": "Bearer " + refreshed.json()["accessToken"]}
    sessions = await client.get(base + "/auth/sessions", headers=bearer)
    assert sessions.status_code == 200
    assert len(sessions.json()) == 1

    logout = await client.post(base + "/auth/logout", headers=csrf)
    assert logout.status_code == 204, logout.text
    assert refresh_cookie_paths(logout) == {base + "/auth/refresh", base + "/auth/logout"}
    assert "refresh_token" not in client.cookies  # both cleared where they were set
    assert (await client.post(base + "/auth/refresh", headers=csrf)).status_code == 401


@asynccontextmanager
async def browser(app: Any, **transport_options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A cookie-keeping client (Secure cookies need https) with ``app``'s lifespan running."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, **transport_options)
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
            yield client


async def test_a_router_prefix_is_in_the_cookie_path(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = cookie_api(users, password_storage, prefix="/v1")
    async with browser(app) as client:
        await log_in_refresh_and_out(client, "/v1", "/v1")


async def test_a_login_elsewhere_sets_the_cookie_where_the_refresh_routes_are(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = cookie_api(users, password_storage, prefix="/v1", login_prefix="/accounts")
    async with browser(app) as client:
        await log_in_refresh_and_out(client, "/v1", "/accounts")


async def test_the_servers_root_path_is_in_the_cookie_path(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    # uvicorn --root-path /api: the scope's path keeps the prefix, root_path names it.
    app, _ = cookie_api(users, password_storage)
    async with browser(app, root_path="/api") as client:
        await log_in_refresh_and_out(client, "/api", "/api")


async def test_fastapis_root_path_behind_a_proxy_is_in_the_cookie_path(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    with pytest.warns(match="The `root_path` parameter is deprecated"):
        app, _ = cookie_api(users, password_storage, root_path="/api")

    async def proxy(scope: Scope, receive: Receive, send: Send) -> None:
        # The proxy serves the application under /api and strips the prefix.
        if scope["type"] == "http":
            assert scope["path"].startswith("/api/")
            scope = {**scope, "path": scope["path"].removeprefix("/api")}
        await app(scope, receive, send)

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=proxy)
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
            await log_in_refresh_and_out(client, "/api", "/api")


async def test_a_mounted_applications_mount_path_is_in_the_cookie_path(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    api, _ = cookie_api(users, password_storage, prefix="/v1")
    outer = FastAPI()
    outer.mount("/sub", api)
    async with browser(outer) as client:  # the outer lifespan: the mounted one never runs
        await log_in_refresh_and_out(client, "/sub/v1", "/sub/v1")


async def test_a_route_answering_with_token_response_sets_the_cookie_where_the_routes_are(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    api, _ = cookie_api(users, password_storage, prefix="/v1")
    outer = FastAPI()
    outer.mount("/sub", api)
    async with browser(outer) as client:
        await client.post("/sub/v1/auth/login", json=CREDENTIALS)
        token = client.cookies.get("refresh_token", path="/sub/v1/auth/refresh")
        # The application's own route: the token in the body, the answer through the module.
        answer = await client.post("/sub/v1/session", json={"refreshToken": token})
        assert answer.status_code == 200, answer.text
        assert refresh_cookie_paths(answer) == {"/sub/v1/auth/refresh", "/sub/v1/auth/logout"}


async def test_without_a_prefix_the_cookie_paths_are_the_written_ones(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = cookie_api(users, password_storage)
    async with browser(app) as client:
        await log_in_refresh_and_out(client, "", "")


async def test_a_route_the_application_writes_keeps_its_written_cookie_path(
    users: InMemoryUsers,
) -> None:
    # controllers=False: the library serves no refresh route; the cookie goes to `path`.
    app = FastAPI()
    refresh = AuthRefreshModule.for_root(
        user_lookup_service=users,
        controllers=False,
        path="/custom/refresh",
        settings={"cookie_transport": True},
    )
    app.include_router(refresh.router, prefix="/v1")

    @app.post("/v1/custom/refresh")
    async def custom(user: Annotated[Any, Depends(AuthRefreshGuard())], request: Request) -> Any:
        return refresh.token_response(await refresh.issue(user, request))

    async with browser(app) as client:
        pair = await refresh.issue_for_subject("user-1")
        answer = await client.post("/v1/custom/refresh", json=pair)
    assert answer.status_code == 200, answer.text
    assert refresh_cookie_paths(answer) == {"/custom/refresh"}
