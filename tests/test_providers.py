"""Any provider kind may stand for a service (issue 23, item 4): an async ``Resource``, a
``Coroutine`` or a factory of an ``async def`` is awaited; a provider given as an option is
used as the provider, resolved when it is used."""

from __future__ import annotations

import asyncio
import inspect
import types
from collections.abc import AsyncIterator, Generator
from typing import Annotated, Any

import pytest
from dependency_injector import containers, providers
from dependency_injector.errors import Error
from fastapi import Depends, FastAPI

from auth_refresh import (
    AuthenticationModule,
    AuthJwtGuard,
    AuthJwtModule,
    AuthLocalModule,
    AuthRefreshModule,
    ConfigurationError,
    PasswordStorageService,
)
from auth_refresh._utils import is_awaitable, provided
from conftest import InMemoryUsers, User, serve
from factories import assert_unauthorized, login
from rotation_app import refresh, rotating_app

pytestmark = pytest.mark.anyio


def async_resource(users: InMemoryUsers, closed: list[str]) -> providers.Resource[Any]:
    async def lookup() -> AsyncIterator[InMemoryUsers]:
        yield users
        closed.append("closed")

    return providers.Resource(lookup)


async def test_an_async_resource_override_of_the_lookup_is_awaited(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, module = rotating_app(users, password_storage)
    others = InMemoryUsers(User("user-1", "user@example.com"))
    closed: list[str] = []
    resource = async_resource(others, closed)
    async with serve(app) as client:
        pair = await login(client)
        # After startup, as a test fixture does it.
        with module.container.user_lookup.override(resource):
            response = await refresh(client, pair["refreshToken"])
            assert response.status_code == 200, response.text
            assert others.subject_lookups == ["user-1"]
        await resource.shutdown()  # type: ignore[misc]
    assert closed == ["closed"]


@pytest.mark.parametrize("kind", ["Coroutine", "async Factory", "async Singleton"])
async def test_async_providers_of_every_kind_are_awaited_per_request(
    users: InMemoryUsers, password_storage: PasswordStorageService, kind: str
) -> None:
    async def make() -> InMemoryUsers:
        return users

    provider: providers.Provider[Any] = {
        "Coroutine": providers.Coroutine(make),
        "async Factory": providers.Factory(make),
        "async Singleton": providers.Singleton(make),
    }[kind]
    app, module = rotating_app(users, password_storage)
    async with serve(app) as client:
        pair = await login(client)
        with module.container.user_lookup.override(provider):
            first = await refresh(client, pair["refreshToken"])
            assert first.status_code == 200, first.text
            second = await refresh(client, first.json()["refreshToken"])
            assert second.status_code == 200, second.text
            # Nobody by that name: the documented 401, not a 500.
            with module.container.user_lookup.override(providers.Coroutine(_nobody)):
                assert_unauthorized(await refresh(client, second.json()["refreshToken"]))


async def _nobody() -> InMemoryUsers:
    return InMemoryUsers()


class Services(containers.DeclarativeContainer):
    """The application's own container, as dependency-injector's FastAPI example writes it."""

    users = providers.Singleton(InMemoryUsers)
    authentication = providers.Singleton(AuthenticationModule.for_root)


async def test_providers_given_as_options_are_used_as_providers(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    services = Services()
    services.users.override(providers.Object(users))

    async def verify() -> Any:
        return services.authentication().verify_token_service

    app = FastAPI()
    refresh_module = AuthRefreshModule.for_root(
        user_lookup_service=services.users,
        verify_token_service=providers.Coroutine(verify),
    )
    refresh_module.attach(app)
    AuthLocalModule.for_root(
        user_lookup_service=users,
        issue_token_service=refresh_module.login_issue_token_service,
        password_storage_service=password_storage,
    ).attach(app)
    AuthJwtModule.for_root(
        user_lookup_service=services.users, verify_token_service=providers.Coroutine(verify)
    ).attach(app)

    @app.get("/me")
    async def me(user: Annotated[Any, Depends(AuthJwtGuard())]) -> dict[str, str]:
        return {"id": user.id}

    async with serve(app) as client:
        pair = await login(client)
        refreshed = await refresh(client, pair["refreshToken"])
        assert refreshed.status_code == 200, refreshed.text
        access = {"Authorization": f"Bearer {refreshed.json()['accessToken']}"}
        assert (await client.get("/me", headers=access)).json() == {"id": "user-1"}
        # Resolved when used: an override of the application's provider reaches both modules.
        with services.users.override(providers.Object(InMemoryUsers())):
            assert (await client.get("/me", headers=access)).status_code == 401
            assert_unauthorized(await refresh(client, refreshed.json()["refreshToken"]))


async def test_an_async_resource_override_of_the_access_lookup_is_awaited(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = rotating_app(users, password_storage)
    access = next(
        module for module in app.state.auth_refresh_registry.modules if module.kind == "auth_jwt"
    )
    closed: list[str] = []
    async with serve(app) as client:
        pair = await login(client)
        resource = async_resource(users, closed)
        with access.container.user_lookup.override(resource):
            response = await client.get(
                "/me", headers={"Authorization": f"Bearer {pair['accessToken']}"}
            )
            assert response.json() == {"id": "user-1"}
        await resource.shutdown()  # type: ignore[misc]
    assert closed == ["closed"]


async def test_a_provider_option_without_the_methods_is_refused_at_startup() -> None:
    app = FastAPI()
    AuthRefreshModule.for_root(user_lookup_service=providers.Coroutine(_no_lookup)).attach(app)
    with pytest.raises(ConfigurationError, match="has no method by_subject"):
        async with serve(app):
            pass


async def _no_lookup() -> object:
    return object()


@types.coroutine
def _generator_based() -> Generator[None, None, str]:
    yield
    return "done"


async def _native() -> None:
    return None


def test_is_awaitable_tells_what_inspect_isawaitable_tells() -> None:
    """The walks' quick check agrees with the standard one, generator-based coroutines too."""
    loop = asyncio.new_event_loop()
    try:
        coroutine = _native()
        values = [
            coroutine, _generator_based(), loop.create_future(), (x for x in range(0)),
            InMemoryUsers(), "text", {"a": 1}, None, 0, providers.Object(1), _native,
        ]  # fmt: skip
        assert [is_awaitable(v) for v in values] == [inspect.isawaitable(v) for v in values]
        assert sum(map(is_awaitable, values)) == 3
        coroutine.close()
    finally:
        loop.close()


class _Providers(containers.DeclarativeContainer):
    service = providers.Dependency(default=providers.Singleton(list))
    number = providers.Dependency(instance_of=int, default=providers.Object(1))
    required = providers.Dependency()
    plain = providers.Singleton(dict)


def test_provided_gives_what_calling_the_provider_gives() -> None:
    """The walks' shortcut past a Dependency's wrapper: overrides, resets and new defaults
    apply as they do to the provider itself, and what it refuses is refused."""
    container = _Providers()
    made = container.service()
    assert provided(container.service) is made
    assert provided(container.plain) is container.plain()  # not a Dependency: called
    with container.service.override(providers.Object("override")):
        assert provided(container.service) == "override"
    assert provided(container.service) is made
    container.service.set_default(providers.Object("registration"))
    assert provided(container.service) == "registration"
    with container.override_providers(service=providers.Object("test")):
        assert provided(container.service) == "test"
    assert provided(container.service) == "registration"
    with container.number.override(providers.Object("not a number")), pytest.raises(Error):
        provided(container.number)
    with pytest.raises(Error):
        provided(container.required)
    container.required.override(providers.Object("set"))
    assert provided(container.required) == "set"
    container.required.reset_override()
    with pytest.raises(Error):
        provided(container.required)
