"""Misconfigurations refused at startup instead of failing per request (issue 23, items 5 and
8): the session routes without an ``AuthJwtModule``, two routes on one path, and an async
registration's factory, run at every startup."""

from __future__ import annotations

from typing import Any

import pytest
from dependency_injector import containers, providers
from fastapi import APIRouter, FastAPI

from auth_refresh import (
    AuthenticationModule,
    AuthJwtGuard,
    AuthRefreshModule,
    ConfigurationError,
)
from conftest import InMemoryUsers, User, serve
from factories import assert_unauthorized

pytestmark = pytest.mark.anyio


async def test_session_routes_without_an_access_module_are_refused_at_startup(
    users: InMemoryUsers,
) -> None:
    app = FastAPI()
    AuthRefreshModule.for_root(user_lookup_service=users, sessions_path="/auth/sessions").attach(
        app
    )
    with pytest.raises(ConfigurationError) as raised:
        async with serve(app):
            pass
    message = raised.value.message
    assert message.startswith("AuthRefreshModule.for_root: the routes under /auth/sessions")
    assert "AuthJwtModule.for_root(...)" in message


async def test_session_routes_with_the_access_guard_replaced_start(users: InMemoryUsers) -> None:
    app = FastAPI()
    AuthRefreshModule.for_root(user_lookup_service=users, sessions_path="/auth/sessions").attach(
        app
    )
    app.dependency_overrides[AuthJwtGuard()] = lambda: users.users["user-1"]
    async with serve(app) as client:
        response = await client.get("/auth/sessions")
        assert response.status_code == 200, response.text
        assert response.json() == []


async def test_two_refresh_routes_on_one_path_are_refused_naming_both(
    users: InMemoryUsers,
) -> None:
    async def options() -> dict[str, Any]:
        return {"user_lookup_service": users}

    app = FastAPI()
    AuthRefreshModule.for_root(user_lookup_service=users).attach(app)
    AuthRefreshModule.register_async(factory=options).attach(app)  # no path=
    with pytest.raises(ConfigurationError) as raised:
        async with serve(app):
            pass
    assert raised.value.message == (
        "POST /auth/refresh is routed twice, by AuthRefreshModule.for_root and by "
        "AuthRefreshModule.register_async: only the first ever answers; give the second its "
        "own path (path=...)"
    )


async def test_a_route_of_the_application_on_a_modules_path_is_refused(
    users: InMemoryUsers,
) -> None:
    app = FastAPI()

    @app.post("/auth/refresh")
    async def my_refresh() -> None:
        return None

    AuthRefreshModule.for_root(user_lookup_service=users).attach(app)
    with pytest.raises(ConfigurationError, match=r"by the application's .*my_refresh\(\) and by"):
        async with serve(app):
            pass


async def test_the_same_path_under_another_prefix_is_no_clash(users: InMemoryUsers) -> None:
    app = FastAPI()
    AuthRefreshModule.for_root(user_lookup_service=users).attach(app)
    mobile = APIRouter(prefix="/mobile")
    mobile.include_router(AuthRefreshModule.register(user_lookup_service=users).router)
    app.include_router(mobile)
    token = AuthenticationModule.for_root().issue_token_service.refresh_token({"sub": "user-1"})
    async with serve(app) as client:
        # Both answer (a token without a family is refused by either, after its lookup).
        assert_unauthorized(await client.post("/auth/refresh", json={"refreshToken": token}))
        assert_unauthorized(await client.post("/mobile/auth/refresh", json={"refreshToken": token}))


class Application(containers.DeclarativeContainer):
    users = providers.Singleton(InMemoryUsers)


async def test_an_async_registrations_factory_runs_at_every_startup(
    users: InMemoryUsers,
) -> None:
    """A test overriding the application's provider around one startup: the next startup
    gets the provider's own value again (the override does not stick into the next test)."""
    application = Application()
    application.users.override(providers.Object(users))
    calls: list[InMemoryUsers] = []

    async def options(lookup: InMemoryUsers) -> dict[str, Any]:
        calls.append(lookup)
        return {"user_lookup_service": lookup, "settings": {"rotation": False}}

    module = AuthRefreshModule.register_async(factory=options, inject=[application.users])
    app = FastAPI()
    module.attach(app)
    token = AuthenticationModule.for_root().issue_token_service.refresh_token({"sub": "user-1"})
    nobody = InMemoryUsers(User("user-2", "other@example.com"))

    async def one_lifespan() -> int:
        async with serve(app) as client:
            response = await client.post("/auth/refresh", json={"refreshToken": token})
            return response.status_code

    statuses = [await one_lifespan()]
    with application.users.override(providers.Object(nobody)):
        statuses.append(await one_lifespan())
    statuses.append(await one_lifespan())
    assert calls == [users, nobody, users]
    assert statuses == [200, 401, 200]
