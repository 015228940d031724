"""AuthRefreshModule: every registration mode, inheritance, and overriding providers in tests."""

from typing import Annotated, Any

import pytest
from dependency_injector import providers
from fastapi import Depends, FastAPI

from auth_refresh import (
    AuthenticationModule,
    AuthRefreshGuard,
    AuthRefreshModule,
    AuthRefreshOptions,
    ConfigurationError,
    ExtractJwt,
    PasswordStorageService,
)
from conftest import InMemoryUsers, User, serve
from factories import assert_unauthorized, login
from rotation_app import rotating_app

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def stateless_refresh(jwt_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests refresh tokens signed without a token family: stateless mode (rotation is
    tested in tests/test_rotation*.py)."""
    monkeypatch.setenv("AUTH_REFRESH_ROTATION", "false")


class RecordingIssuer:
    """A real issue service that remembers whom it issued for (wraps the default one)."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.inner = AuthenticationModule.for_root().issue_token_service
        self.issued_for: list[str] = []

    async def access_token(self, payload: Any) -> str:
        return self.inner.access_token(payload)

    async def refresh_token(self, payload: Any) -> str:
        return self.inner.refresh_token(payload)

    async def response_payload(self, user_id: str) -> Any:
        self.issued_for.append(user_id)
        return self.inner.response_payload(user_id)


def guarded_app(*modules: AuthRefreshModule, guard: AuthRefreshGuard | None = None) -> FastAPI:
    app = FastAPI()
    for module in modules:
        module.attach(app)
    chosen = guard or AuthRefreshGuard()

    @app.post("/whoami")
    async def whoami(user: Annotated[Any, Depends(chosen)]) -> dict[str, str]:
        return {"id": user.id if not isinstance(user, dict) else user["id"]}

    return app


async def test_for_root_serves_the_tutorial_flow(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = rotating_app(users, password_storage, logout_path=None)
    async with serve(app) as client:
        pair = await login(client)
        refreshed = await client.post("/auth/refresh", json={"refreshToken": pair["refreshToken"]})
        assert refreshed.status_code == 200
        assert set(refreshed.json()) == {"accessToken", "refreshToken"}
        me = await client.get(
            "/me", headers={"Authorization": f"Bearer {refreshed.json()['accessToken']}"}
        )
        assert me.json() == {"id": "user-1"}


async def test_unqualified_guard_uses_the_global_registration(users: InMemoryUsers) -> None:
    root = AuthRefreshModule.for_root(user_lookup_service=users, controllers=False)
    app = guarded_app(root)
    token = AuthenticationModule.for_root().issue_token_service.refresh_token({"sub": "user-1"})
    async with serve(app) as client:
        response = await client.post("/whoami", json={"refreshToken": token})
        assert response.json() == {"id": "user-1"}
        assert_unauthorized(await client.post("/whoami", json={}), token_sent=False)
        # controllers=False: no built-in route.
        assert (await client.post("/auth/refresh", json={"refreshToken": token})).status_code == 404


async def test_register_alone_uses_its_own_options_and_defaults(users: InMemoryUsers) -> None:
    feature = AuthRefreshModule.register(user_lookup_service=users, path="/feature/refresh")
    app = guarded_app(feature, guard=feature.guard)
    token = AuthenticationModule.for_root().issue_token_service.refresh_token({"sub": "user-1"})
    async with serve(app) as client:
        response = await client.post("/feature/refresh", json={"refreshToken": token})
        assert response.status_code == 200
        assert (await client.post("/whoami", json={"refreshToken": token})).status_code == 200


async def test_register_inherits_what_it_does_not_set_from_the_global_one(
    users: InMemoryUsers,
) -> None:
    root_issuer = RecordingIssuer("root")
    root = AuthRefreshModule.for_root(user_lookup_service=users, issue_token_service=root_issuer)
    feature = AuthRefreshModule.register(
        settings={"jwt_from_request": ExtractJwt.from_auth_header_as_bearer_token()},
        path="/mobile/refresh",
    )
    app = guarded_app(root, feature)
    token = AuthenticationModule.for_root().issue_token_service.refresh_token({"sub": "user-1"})
    async with serve(app) as client:
        response = await client.post(
            "/mobile/refresh", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 200
        # The feature's own extractor: a body token is not looked at on its route.
        assert_unauthorized(
            await client.post("/mobile/refresh", json={"refreshToken": token}), token_sent=False
        )
        # The global route keeps the default body extractor.
        assert (await client.post("/auth/refresh", json={"refreshToken": token})).status_code == 200
    assert root_issuer.issued_for == ["user-1", "user-1"]


async def test_resolution_order_feature_override_then_option_then_global(
    users: InMemoryUsers,
) -> None:
    root_issuer, option_issuer, override_issuer = (
        RecordingIssuer("root"),
        RecordingIssuer("option"),
        RecordingIssuer("override"),
    )
    root = AuthRefreshModule.for_root(user_lookup_service=users, issue_token_service=root_issuer)
    with_option = AuthRefreshModule.register(issue_token_service=option_issuer, path="/a")
    without_option = AuthRefreshModule.register(path="/b")
    app = guarded_app(root, with_option, without_option)
    token = AuthenticationModule.for_root().issue_token_service.refresh_token({"sub": "user-1"})
    body = {"refreshToken": token}
    async with serve(app) as client:
        with with_option.container.issuer.override(providers.Object(override_issuer)):
            assert (await client.post("/a", json=body)).status_code == 200
        assert (await client.post("/a", json=body)).status_code == 200
        assert (await client.post("/b", json=body)).status_code == 200
    assert override_issuer.issued_for == ["user-1"]
    assert option_issuer.issued_for == ["user-1"]
    assert root_issuer.issued_for == ["user-1"]


async def test_a_global_override_reaches_features_and_a_feature_override_stays_local(
    users: InMemoryUsers,
) -> None:
    root = AuthRefreshModule.for_root(user_lookup_service=users)
    feature = AuthRefreshModule.for_feature(controllers=True, path="/feature/refresh")
    app = guarded_app(root, feature)
    other_users = InMemoryUsers(User("user-2", "other@example.com"))
    nobody = InMemoryUsers()
    issue = AuthenticationModule.for_root().issue_token_service
    user_2 = {"refreshToken": issue.refresh_token({"sub": "user-2"})}
    async with serve(app) as client:
        assert_unauthorized(await client.post("/feature/refresh", json=user_2))
        with root.container.user_lookup.override(providers.Object(other_users)):
            assert (await client.post("/feature/refresh", json=user_2)).status_code == 200
            assert (await client.post("/auth/refresh", json=user_2)).status_code == 200
        with feature.container.user_lookup.override(providers.Object(other_users)):
            assert (await client.post("/feature/refresh", json=user_2)).status_code == 200
            assert_unauthorized(await client.post("/auth/refresh", json=user_2))
        with feature.container.user_lookup.override(providers.Object(nobody)):
            assert_unauthorized(await client.post("/feature/refresh", json=user_2))
    assert other_users.subject_lookups == ["user-2", "user-2", "user-2"]


async def test_for_feature_guards_a_route_with_its_own_lookup(users: InMemoryUsers) -> None:
    admins = InMemoryUsers(User("admin-1", "admin@example.com"))
    root = AuthRefreshModule.for_root(user_lookup_service=users)
    admin_feature = AuthRefreshModule.for_feature(user_lookup_service=admins)
    assert admin_feature.router.routes == []  # no route; its router carries the lifespan
    app = guarded_app(root, admin_feature, guard=admin_feature.guard)
    issue = AuthenticationModule.for_root().issue_token_service
    async with serve(app) as client:
        admin = {"refreshToken": issue.refresh_token({"sub": "admin-1"})}
        user = {"refreshToken": issue.refresh_token({"sub": "user-1"})}
        assert (await client.post("/whoami", json=admin)).json() == {"id": "admin-1"}
        assert_unauthorized(await client.post("/whoami", json=user))


async def test_for_feature_without_a_global_registration_fails_at_startup() -> None:
    app = guarded_app(AuthRefreshModule.for_feature(user_lookup_service=InMemoryUsers()))
    with pytest.raises(ConfigurationError, match=r"for_feature: needs AuthRefreshModule.for_root"):
        async with serve(app):
            pass


async def test_a_missing_user_lookup_fails_at_startup_naming_the_option() -> None:
    app = guarded_app(AuthRefreshModule.for_root())
    with pytest.raises(ConfigurationError, match="'user_lookup_service' is required"):
        async with serve(app):
            pass


async def test_a_user_lookup_without_by_subject_fails_at_startup() -> None:
    app = guarded_app(AuthRefreshModule.for_root(user_lookup_service=object()))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"'user_lookup_service' has no method by_subject"):
        async with serve(app):
            pass


async def test_a_missing_secret_fails_at_startup_naming_the_env_var(
    users: InMemoryUsers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JWT_MODULE_REFRESH_SECRET")
    app = guarded_app(AuthRefreshModule.for_root(user_lookup_service=users))
    with pytest.raises(ConfigurationError, match="JWT_MODULE_REFRESH_SECRET is not set"):
        async with serve(app):
            pass


async def test_two_global_registrations_on_one_app_are_refused(users: InMemoryUsers) -> None:
    app = FastAPI()
    AuthRefreshModule.for_root(user_lookup_service=users).attach(app)
    with pytest.raises(ConfigurationError, match="global auth_refresh module is attached already"):
        AuthRefreshModule.for_root(user_lookup_service=users, path="/other").attach(app)


async def test_for_root_async_runs_the_factory_at_each_startup_with_injected_values(
    users: InMemoryUsers,
) -> None:
    calls: list[tuple[Any, ...]] = []

    async def make_lookup() -> InMemoryUsers:
        return users

    app_users = providers.Coroutine(make_lookup)
    prefix = providers.Object("user-")

    async def factory(lookup: InMemoryUsers, subject_prefix: str) -> AuthRefreshOptions:
        calls.append((lookup, subject_prefix))
        return AuthRefreshOptions(user_lookup_service=lookup)

    module = AuthRefreshModule.for_root_async(factory=factory, inject=[app_users, prefix])
    app = guarded_app(module)
    token = AuthenticationModule.for_root().issue_token_service.refresh_token({"sub": "user-1"})
    assert calls == []
    async with serve(app) as client:
        assert calls == [(users, "user-")]
        assert (await client.post("/auth/refresh", json={"refreshToken": token})).status_code == 200
        assert (await client.post("/whoami", json={"refreshToken": token})).status_code == 200
        assert len(calls) == 1  # once per startup, not per request
    async with serve(app) as client:
        assert (await client.post("/whoami", json={"refreshToken": token})).status_code == 200
    assert calls == [(users, "user-"), (users, "user-")]


async def test_register_async_with_a_sync_factory_returning_a_mapping(
    users: InMemoryUsers,
) -> None:
    root = AuthRefreshModule.for_root(user_lookup_service=InMemoryUsers())
    feature = AuthRefreshModule.register_async(
        factory=lambda lookup: {
            "user_lookup_service": lookup,
            "settings": {"jwt_from_request": ExtractJwt.from_header("x-refresh-token")},
        },
        inject=[providers.Object(users)],
        path="/feature/refresh",
    )
    app = guarded_app(root, feature)
    token = AuthenticationModule.for_root().issue_token_service.refresh_token({"sub": "user-1"})
    async with serve(app) as client:
        ok = await client.post("/feature/refresh", headers={"x-refresh-token": token})
        assert ok.status_code == 200
        # The global registration keeps its own (empty) lookup.
        assert_unauthorized(await client.post("/auth/refresh", json={"refreshToken": token}))


async def test_use_class_builds_the_options_class_with_the_injected_values(
    users: InMemoryUsers,
) -> None:
    class Options:
        def __init__(self, lookup: InMemoryUsers) -> None:
            self.lookup = lookup

        async def create(self) -> AuthRefreshOptions:
            return AuthRefreshOptions(user_lookup_service=self.lookup)

    module = AuthRefreshModule.for_root_async(use_class=Options, inject=[providers.Object(users)])
    token = AuthenticationModule.for_root().issue_token_service.refresh_token({"sub": "user-1"})
    async with serve(guarded_app(module)) as client:
        assert (await client.post("/auth/refresh", json={"refreshToken": token})).status_code == 200


async def test_a_failing_factory_stops_startup_with_a_clear_error() -> None:
    async def factory() -> AuthRefreshOptions:
        raise RuntimeError("vault unreachable")

    app = guarded_app(AuthRefreshModule.for_root_async(factory=factory))
    with pytest.raises(
        ConfigurationError, match=r"for_root_async: the options factory failed: .*vault unreachable"
    ):
        async with serve(app):
            pass


async def test_a_factory_returning_unknown_options_stops_startup() -> None:
    app = guarded_app(AuthRefreshModule.for_root_async(factory=lambda: {"user_lookup": 1}))
    with pytest.raises(ConfigurationError, match=r"unknown options \['user_lookup'\]"):
        async with serve(app):
            pass


def test_async_registration_needs_exactly_one_of_factory_and_use_class() -> None:
    with pytest.raises(ConfigurationError, match="exactly one of 'factory' and 'use_class'"):
        AuthRefreshModule.for_root_async()


def test_inject_takes_providers_only() -> None:
    with pytest.raises(ConfigurationError, match="'inject' takes dependency-injector providers"):
        AuthRefreshModule.register_async(factory=dict, inject=["not a provider"])  # type: ignore[list-item]


async def test_an_async_module_whose_lifespan_never_ran_starts_on_its_first_request(
    users: InMemoryUsers,
) -> None:
    import httpx

    token = AuthenticationModule.for_root().issue_token_service.refresh_token({"sub": "user-1"})
    app = guarded_app(
        AuthRefreshModule.for_root_async(factory=lambda: {"user_lookup_service": users})
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        ok = await client.post("/auth/refresh", json={"refreshToken": token})
        assert ok.status_code == 200


async def test_a_broken_module_whose_lifespan_never_ran_says_what_to_do(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import httpx

    app = guarded_app(AuthRefreshModule.for_root_async(factory=lambda: {}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        with caplog.at_level("ERROR", logger="auth_refresh"):
            response = await client.post("/auth/refresh", json={"refreshToken": "x"})
    assert response.status_code == 500
    assert "user_lookup_service" not in response.text  # details go to the log only
    (record,) = [r for r in caplog.records if "user_lookup_service" in r.message]
    assert "'user_lookup_service' is required" in record.message
    assert "lifespan did not run" in record.message
    assert "app.mount()" in record.message


async def test_a_sync_module_works_without_the_lifespan(users: InMemoryUsers) -> None:
    import httpx

    app = guarded_app(AuthRefreshModule.for_root(user_lookup_service=users))
    token = AuthenticationModule.for_root().issue_token_service.refresh_token({"sub": "user-1"})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.post("/auth/refresh", json={"refreshToken": token})
        assert response.status_code == 200


async def test_guard_without_any_global_registration_explains_itself(
    users: InMemoryUsers,
) -> None:
    app = guarded_app(AuthRefreshModule.register(user_lookup_service=users, controllers=False))
    async with serve(app) as client:
        with pytest.raises(RuntimeError, match=r"needs AuthRefreshModule.for_root"):
            await client.post("/whoami", json={"refreshToken": "x"})


async def test_services_may_be_sync_or_async_and_users_may_be_mappings() -> None:
    class AsyncLookup:
        async def by_subject(self, subject: str) -> dict[str, str] | None:
            return {"id": subject} if subject == "user-9" else None

    class AsyncVerifier:
        def __init__(self) -> None:
            self.inner = AuthenticationModule.for_root().verify_token_service

        async def access_token(self, token: str) -> Any:
            return self.inner.access_token(token)

        async def refresh_token(self, token: str) -> Any:
            return self.inner.refresh_token(token)

    issuer = RecordingIssuer("async")
    module = AuthRefreshModule.for_root(
        user_lookup_service=AsyncLookup(),
        issue_token_service=issuer,
        verify_token_service=AsyncVerifier(),
    )
    token = AuthenticationModule.for_root().issue_token_service.refresh_token({"sub": "user-9"})
    async with serve(guarded_app(module)) as client:
        assert (await client.post("/auth/refresh", json={"refreshToken": token})).status_code == 200
        assert (await client.post("/whoami", json={"refreshToken": token})).json() == {
            "id": "user-9"
        }
    assert issuer.issued_for == ["user-9"]


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_settings_verify_token_replaces_the_verification(
    users: InMemoryUsers, asynchronous: bool
) -> None:
    """The docs' section 6: a verify_token callback (sync or async) and another extractor."""
    seen: list[str] = []

    def verify(token: str) -> dict[str, str]:
        seen.append(token)
        if token != "opaque-token-of-user-1":
            raise ValueError("unknown token")
        return {"sub": "user-1"}

    async def verify_async(token: str) -> dict[str, str]:
        return verify(token)

    module = AuthRefreshModule.for_root(
        user_lookup_service=users,
        settings={
            "jwt_from_request": ExtractJwt.from_auth_header_as_bearer_token(),
            "verify_token": verify_async if asynchronous else verify,
        },
    )
    async with serve(guarded_app(module)) as client:
        ok = await client.post(
            "/auth/refresh", headers={"Authorization": "Bearer opaque-token-of-user-1"}
        )
        assert ok.status_code == 200
        refused = await client.post("/auth/refresh", headers={"Authorization": "Bearer other"})
        assert_unauthorized(refused)
    assert seen == ["opaque-token-of-user-1", "other"]


async def test_verify_token_returning_no_subject_is_unauthorized(users: InMemoryUsers) -> None:
    module = AuthRefreshModule.for_root(
        user_lookup_service=users, settings={"verify_token": lambda token: {"id": "user-1"}}
    )
    async with serve(guarded_app(module)) as client:
        assert_unauthorized(await client.post("/auth/refresh", json={"refreshToken": "x"}))
    assert users.subject_lookups == []


async def test_overriding_providers_in_a_test(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    """The idiom to copy: override a provider of the module's container instance."""
    app, refresh = rotating_app(users, password_storage, logout_path=None)
    disabled_users = InMemoryUsers()  # e.g. the account was deleted meanwhile
    async with serve(app) as client:
        pair = await login(client)
        with refresh.container.user_lookup.override(providers.Object(disabled_users)):
            refused = await client.post(
                "/auth/refresh", json={"refreshToken": pair["refreshToken"]}
            )
        assert_unauthorized(refused)
        accepted = await client.post("/auth/refresh", json={"refreshToken": pair["refreshToken"]})
        assert accepted.status_code == 200


async def test_invalid_settings_in_code_fail_at_registration() -> None:
    with pytest.raises(ConfigurationError, match="'unknown' is not a setting"):
        AuthRefreshModule.for_root(user_lookup_service=InMemoryUsers(), settings={"unknown": 1})


async def test_an_override_made_before_startup_keeps_precedence_over_async_options(
    users: InMemoryUsers,
) -> None:
    factory_users = InMemoryUsers()  # knows nobody
    module = AuthRefreshModule.for_root_async(
        factory=lambda: {"user_lookup_service": factory_users}
    )
    app = guarded_app(module)
    token = AuthenticationModule.for_root().issue_token_service.refresh_token({"sub": "user-1"})
    with module.container.user_lookup.override(providers.Object(users)):
        async with serve(app) as client:
            ok = await client.post("/auth/refresh", json={"refreshToken": token})
            assert ok.status_code == 200
    assert users.subject_lookups == ["user-1"]
    assert factory_users.subject_lookups == []


async def test_a_feature_inherits_again_once_an_early_override_ends(users: InMemoryUsers) -> None:
    feature = AuthRefreshModule.register(path="/feature/refresh")
    app = guarded_app(AuthRefreshModule.for_root(user_lookup_service=users), feature)
    issue = AuthenticationModule.for_root().issue_token_service
    body = {"refreshToken": issue.refresh_token({"sub": "user-1"})}
    nobody = InMemoryUsers()
    with feature.container.user_lookup.override(providers.Object(nobody)):
        async with serve(app) as client:
            assert_unauthorized(await client.post("/feature/refresh", json=body))
        assert nobody.subject_lookups == ["user-1"]
    async with serve(app) as client:
        # The override is gone: the feature falls back to the global lookup, not to nothing.
        assert (await client.post("/feature/refresh", json=body)).status_code == 200
    assert users.subject_lookups == ["user-1"]


async def test_a_configuration_fault_at_request_time_is_a_500_naming_no_internals(
    users: InMemoryUsers, caplog: pytest.LogCaptureFixture
) -> None:
    module = AuthRefreshModule.for_root(user_lookup_service=users)  # stateless in this file
    app = guarded_app(module)

    @app.post("/admin/log-out-everywhere")
    async def log_out_everywhere() -> None:
        await module.revoke_subject("user-1")

    async with serve(app) as client:
        with caplog.at_level("ERROR", logger="auth_refresh"):
            response = await client.post("/admin/log-out-everywhere")
    assert response.status_code == 500
    assert response.json()["errorCode"] == "AUTH_REFRESH_ERROR"
    assert response.json()["message"] == "Internal authentication error"
    assert "AuthRefreshModule" not in response.text
    assert any("revoke_subject needs rotation" in record.message for record in caplog.records)
