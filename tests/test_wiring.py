"""FastAPI-native wiring (issue 10, items 3 to 7 and 9): the idioms FastAPI and
dependency-injector users know, and configuration mistakes that say what to do."""

import logging
from typing import Annotated, Any

import pytest
from dependency_injector import containers, providers
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from auth_refresh import (
    AuthenticationModule,
    AuthJwtGuard,
    AuthJwtModule,
    AuthLocalModule,
    AuthRefreshGuard,
    AuthRefreshModule,
    AuthRefreshSettings,
    ConfigurationError,
    PasswordStorageService,
)
from conftest import InMemoryUsers, User, serve
from factories import assert_unauthorized, login
from rotation_app import refresh, rotating_app

pytestmark = pytest.mark.anyio


# -- 3: guards are dependency_overrides keys ---------------------------------------------------


def test_guards_of_one_registration_are_equal_and_hash_alike(users: InMemoryUsers) -> None:
    module = AuthRefreshModule.for_root(user_lookup_service=users)
    other = AuthRefreshModule.register(user_lookup_service=users)
    assert AuthRefreshGuard() == AuthRefreshGuard()
    assert hash(AuthRefreshGuard()) == hash(AuthRefreshGuard())
    assert AuthRefreshGuard(module) == module.guard
    assert hash(AuthRefreshGuard(module)) == hash(module.guard)
    assert module.guard != other.guard
    assert AuthJwtGuard() == AuthJwtGuard()
    assert hash(AuthJwtGuard()) == hash(AuthJwtGuard())
    access = AuthJwtModule.for_root(user_lookup_service=users)
    assert AuthJwtGuard(access) == access.guard != AuthJwtGuard()


async def test_dependency_overrides_fake_the_user_of_an_access_guard(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = rotating_app(users, password_storage)
    app.dependency_overrides[AuthJwtGuard()] = lambda: User("fake", "fake@example.com")
    async with serve(app) as client:
        assert (await client.get("/me")).json() == {"id": "fake"}
    app.dependency_overrides.clear()
    async with serve(app) as client:
        assert (await client.get("/me")).status_code == 401


async def test_dependency_overrides_fake_the_user_of_a_refresh_guard(
    users: InMemoryUsers,
) -> None:
    module = AuthRefreshModule.for_root(user_lookup_service=users)
    app = FastAPI()
    module.attach(app)

    @app.post("/whoami")
    async def whoami(user: Annotated[Any, Depends(AuthRefreshGuard())]) -> dict[str, str]:
        return {"id": user.id}

    app.dependency_overrides[AuthRefreshGuard()] = lambda: User("fake", "fake@example.com")
    async with serve(app) as client:
        assert (await client.post("/whoami")).json() == {"id": "fake"}


async def test_the_access_module_has_a_container_to_override(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, refresh_module = rotating_app(users, password_storage)
    async with serve(app) as client:
        pair = await login(client)
        headers = {"Authorization": f"Bearer {pair['accessToken']}"}
        registry_access = app.state.auth_refresh_registry.root("auth_jwt")
        with registry_access.container.user_lookup.override(providers.Object(InMemoryUsers())):
            assert (await client.get("/me", headers=headers)).status_code == 401
        assert (await client.get("/me", headers=headers)).json() == {"id": "user-1"}
        registry_access.container.reset_override()
        assert (await client.get("/me", headers=headers)).json() == {"id": "user-1"}
        assert refresh_module.container.user_lookup() is users


# -- 4: the login module beside a rotating refresh module ---------------------------------------


async def test_a_login_module_without_an_issuer_starts_families_beside_rotation(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app = FastAPI()
    AuthRefreshModule.for_root(user_lookup_service=users).attach(app)
    AuthLocalModule.for_root(
        user_lookup_service=users, password_storage_service=password_storage
    ).attach(app)
    async with serve(app) as client:
        pair = await login(client)
        assert (await refresh(client, pair["refreshToken"])).status_code == 200


async def test_an_issuer_that_starts_no_families_is_refused_beside_rotation(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app = FastAPI()
    AuthRefreshModule.for_root(user_lookup_service=users).attach(app)
    AuthLocalModule.for_root(
        user_lookup_service=users,
        issue_token_service=AuthenticationModule.for_root().issue_token_service,
        password_storage_service=password_storage,
    ).attach(app)
    with pytest.raises(
        ConfigurationError,
        match=r"AuthLocalModule.for_root: issue_token_service starts no token families.*"
        r"issue_token_service=<refresh module>.login_issue_token_service",
    ):
        async with serve(app):
            pass


# -- 5: include_router alone, and mounted applications -----------------------------------------


async def test_include_router_alone_works_like_attach(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    async def factory() -> dict[str, Any]:
        return {"user_lookup_service": users}

    refresh_module = AuthRefreshModule.for_root_async(factory=factory)
    access = AuthJwtModule.for_root(user_lookup_service=users)
    local = AuthLocalModule.for_root(
        user_lookup_service=users, password_storage_service=password_storage
    )
    app = FastAPI()
    # Even the login router first: it issues through the refresh registration all the same.
    app.include_router(local.router)
    app.include_router(refresh_module.router)
    app.include_router(access.router)

    @app.get("/me")
    async def me(user: Annotated[Any, Depends(AuthJwtGuard())]) -> dict[str, str]:
        return {"id": user.id}

    async with serve(app) as client:
        # An invalid token: the documented 401, not a 500.
        assert_unauthorized(await refresh(client, "not-a-token"))
        assert (await client.get("/me")).status_code == 401
        pair = await login(client)
        refreshed = await refresh(client, pair["refreshToken"])
        assert refreshed.status_code == 200, refreshed.text
        me_response = await client.get(
            "/me", headers={"Authorization": f"Bearer {refreshed.json()['accessToken']}"}
        )
        assert me_response.json() == {"id": "user-1"}


def test_attach_serves_the_routes_of_include_router_as_the_applications_own(
    users: InMemoryUsers,
) -> None:
    """FastAPI reaches an application's own routes one step sooner than an included router's:
    attach adds them there, with the same OpenAPI and answers as ``include_router``."""
    schemas, top_level = [], []
    for attach in (True, False):
        module = AuthRefreshModule.for_root(
            user_lookup_service=users, logout_path="/auth/logout", readiness_path="/ready"
        )
        app = FastAPI()
        if attach:
            module.attach(app)
        else:
            app.include_router(module.router)
        top_level.append({route.path for route in app.router.routes if isinstance(route, APIRoute)})
        with TestClient(app) as client:
            schemas.append(client.get("/openapi.json").json())
            assert client.get("/ready").status_code == 200
            assert_unauthorized(client.post("/auth/refresh", json={"refreshToken": "not-a-token"}))
    assert schemas[0] == schemas[1]
    assert {"/auth/refresh", "/auth/logout", "/ready"} <= top_level[0]
    assert "/auth/refresh" not in top_level[1]


async def test_include_router_checks_the_registration_at_startup() -> None:
    app = FastAPI()
    app.include_router(AuthRefreshModule.for_root().router)
    with pytest.raises(ConfigurationError, match="'user_lookup_service' is required"):
        async with serve(app):
            pass


async def test_a_feature_router_included_before_the_global_one_still_inherits_from_it(
    users: InMemoryUsers,
) -> None:
    # Every module the application includes joins before the first one starts.
    app = FastAPI()
    feature = AuthRefreshModule.register(path="/feature/refresh")
    app.include_router(feature.router)
    app.include_router(AuthRefreshModule.for_root(user_lookup_service=users).router)
    async with serve(app):
        assert feature.container.user_lookup() is users


async def test_a_mounted_application_works_though_its_lifespan_never_runs(
    users: InMemoryUsers,
) -> None:
    async def factory() -> dict[str, Any]:
        return {"user_lookup_service": users}

    api = FastAPI()
    AuthRefreshModule.for_root_async(factory=factory).attach(api)
    outer = FastAPI()
    outer.mount("/api", api)
    token = AuthenticationModule.for_root().issue_token_service.refresh_token({"sub": "user-1"})
    async with serve(outer) as client:
        assert_unauthorized(await client.post("/api/auth/refresh", json={"refreshToken": "x"}))
        # A token without a family under rotation: refused, after the lookup was configured.
        assert_unauthorized(await client.post("/api/auth/refresh", json={"refreshToken": token}))


async def test_a_misconfigured_mounted_application_says_what_to_do(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = FastAPI()
    AuthRefreshModule.for_root().attach(api)
    outer = FastAPI()
    outer.mount("/api", api)
    async with serve(outer) as client:
        with caplog.at_level(logging.ERROR, logger="auth_refresh"):
            response = await client.post("/api/auth/refresh", json={"refreshToken": "x"})
    assert response.status_code == 500
    assert any(
        "'user_lookup_service' is required" in record.message and "app.mount()" in record.message
        for record in caplog.records
    )


# -- 6: a refresh guard on an ordinary route ---------------------------------------------------


def guarded_session_app(users: InMemoryUsers, storage: PasswordStorageService) -> FastAPI:
    app = FastAPI()
    module = AuthRefreshModule.for_root(user_lookup_service=users, settings={"grace_seconds": 0})
    module.attach(app)
    AuthLocalModule.for_root(user_lookup_service=users, password_storage_service=storage).attach(
        app
    )

    @app.post("/session")
    async def session(user: Annotated[Any, Depends(AuthRefreshGuard())], request: Request) -> Any:
        # The right way: answer with the successor of the consumed token.
        return module.token_response(await module.issue(user, request))

    @app.post("/forgetful")
    async def forgetful(user: Annotated[Any, Depends(AuthRefreshGuard())]) -> dict[str, str]:
        return {"id": user.id}

    return app


async def test_a_guarded_route_that_hands_over_the_successor_keeps_the_session(
    users: InMemoryUsers,
    password_storage: PasswordStorageService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serve(guarded_session_app(users, password_storage)) as client:
        pair = await login(client)
        with caplog.at_level(logging.WARNING, logger="auth_refresh"):
            session = await client.post("/session", json={"refreshToken": pair["refreshToken"]})
        assert session.status_code == 200
        assert (await refresh(client, session.json()["refreshToken"])).status_code == 200
    assert not [r for r in caplog.records if "did not answer with its successor" in r.message]


async def test_a_guarded_route_that_keeps_the_successor_is_named_in_a_warning(
    users: InMemoryUsers,
    password_storage: PasswordStorageService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serve(guarded_session_app(users, password_storage)) as client:
        pair = await login(client)
        with caplog.at_level(logging.WARNING, logger="auth_refresh"):
            response = await client.post("/forgetful", json={"refreshToken": pair["refreshToken"]})
        assert response.json() == {"id": "user-1"}
    (warning,) = [r for r in caplog.records if "did not answer with its successor" in r.message]
    assert "POST /forgetful" in warning.message


# -- 7: inject takes providers of a container instance ------------------------------------------


class AppContainer(containers.DeclarativeContainer):
    config = providers.Configuration()
    users = providers.Singleton(InMemoryUsers)


def test_inject_refuses_a_provider_of_a_container_class() -> None:
    with pytest.raises(
        ConfigurationError,
        match=r"for_root_async: 'inject' got a provider of the container class AppContainer.*"
        r"inject=\[container.<provider>\]",
    ):
        AuthRefreshModule.for_root_async(factory=dict, inject=[AppContainer.config])


def test_inject_refuses_a_value_naming_providers_object() -> None:
    with pytest.raises(ConfigurationError, match=r"wrap a value in providers.Object\(value\)"):
        AuthRefreshModule.register_async(factory=dict, inject=["not a provider"])  # type: ignore[list-item]


async def test_inject_takes_providers_of_a_configured_instance(users: InMemoryUsers) -> None:
    container = AppContainer()
    container.config.from_dict({"grace_seconds": 7})
    seen: list[Any] = []

    def factory(config: dict[str, Any], lookup: InMemoryUsers) -> dict[str, Any]:
        seen.append(config)
        return {"user_lookup_service": lookup, "settings": config}

    module = AuthRefreshModule.for_root_async(
        factory=factory, inject=[container.config, container.users]
    )
    app = FastAPI()
    module.attach(app)
    async with serve(app):
        assert seen == [{"grace_seconds": 7}]
        assert module.container.settings().grace_seconds == 7


# -- 9: configuration errors that point the right way -------------------------------------------


def test_a_misspelt_setting_in_code_names_the_field_as_written(users: InMemoryUsers) -> None:
    with pytest.raises(ConfigurationError) as raised:
        AuthRefreshModule.for_root(user_lookup_service=users, settings={"grace_second": 0})
    assert raised.value.message == (
        "AuthRefreshModule.for_root: AuthRefreshSettings: 'grace_second' is not a setting "
        "(did you mean 'grace_seconds'?)"
    )


def test_a_bad_setting_in_code_names_the_field_and_from_the_environment_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigurationError, match=r"^AuthRefreshSettings: grace_seconds: "):
        AuthRefreshSettings(grace_seconds=-1)
    monkeypatch.setenv("AUTH_REFRESH_GRACE_SECONDS", "-1")
    with pytest.raises(
        ConfigurationError, match=r"^AuthRefreshSettings: AUTH_REFRESH_GRACE_SECONDS "
    ):
        AuthRefreshSettings()


def test_settings_built_in_code_raise_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="'grace_second' is not a setting"):
        AuthRefreshSettings(grace_second=0)


def test_a_service_class_instead_of_an_instance_is_refused_at_registration() -> None:
    with pytest.raises(
        ConfigurationError,
        match=r"'user_lookup_service' is the class InMemoryUsers; pass an instance, "
        r"e.g. user_lookup_service=InMemoryUsers\(\)",
    ):
        AuthRefreshModule.for_root(user_lookup_service=InMemoryUsers)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="is the class InMemoryUsers"):
        AuthJwtModule.for_root(user_lookup_service=InMemoryUsers)  # type: ignore[arg-type]


async def test_a_service_class_from_a_factory_is_refused_at_startup() -> None:
    app = FastAPI()
    AuthRefreshModule.for_root_async(factory=lambda: {"user_lookup_service": InMemoryUsers}).attach(
        app
    )
    with pytest.raises(ConfigurationError, match="is the class InMemoryUsers"):
        async with serve(app):
            pass


def test_attach_to_a_router_says_to_include_the_modules_router(users: InMemoryUsers) -> None:
    with pytest.raises(
        ConfigurationError, match=r"attach\(\) takes the FastAPI application, got APIRouter"
    ):
        AuthRefreshModule.for_root(user_lookup_service=users).attach(APIRouter())


# -- starlette's TestClient and httpx alike -----------------------------------------------------


def test_starlette_testclient_runs_the_modules(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = rotating_app(users, password_storage)
    with TestClient(app) as client:
        pair = client.post(
            "/auth/login", json={"username": "user@example.com", "password": "password"}
        ).json()
        refreshed = client.post("/auth/refresh", json={"refreshToken": pair["refreshToken"]})
        assert refreshed.status_code == 200
        me = client.get(
            "/me", headers={"Authorization": f"Bearer {refreshed.json()['accessToken']}"}
        )
        assert me.json() == {"id": "user-1"}


def test_an_option_spelt_as_in_the_original_is_refused_naming_the_options() -> None:
    with pytest.raises(
        ConfigurationError, match=r"for_root: unknown options \['userLookupService'\]"
    ):
        AuthRefreshModule.for_root(userLookupService=InMemoryUsers())  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match=r"for_root_async: unknown options \['injects'\]"):
        AuthRefreshModule.for_root_async(factory=dict, injects=[])  # type: ignore[call-arg]
