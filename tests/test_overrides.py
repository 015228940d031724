"""A registration's values sit beneath the overrides tests make (issue 10, items 1 and 2).

dependency-injector's own idioms (``override`` as a context manager, ``override_providers``,
``reset_last_overriding``, ``reset_override``) behave as documented, and resetting returns a
registration to exactly what it was configured with.
"""

from typing import Any

import pytest
from dependency_injector import errors as di_errors
from dependency_injector import providers
from fastapi import FastAPI

from auth_refresh import (
    AuthJwtModule,
    AuthLocalModule,
    AuthRefreshModule,
    AuthRefreshSettings,
    ExtractJwt,
    MemoryRefreshTokenStore,
    PasswordStorageService,
    TokenRotationService,
)
from conftest import InMemoryUsers, User, serve
from factories import assert_unauthorized, login
from rotation_app import refresh, rotating_app

pytestmark = pytest.mark.anyio


def feature_app(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> tuple[FastAPI, AuthRefreshModule, AuthRefreshModule]:
    """A global registration with the login, and a feature with its own refresh route."""
    app = FastAPI()
    root = AuthRefreshModule.for_root(user_lookup_service=users)
    feature = AuthRefreshModule.for_feature(controllers=True, path="/feature/refresh")
    root.attach(app)
    feature.attach(app)
    AuthLocalModule.for_root(
        user_lookup_service=users, password_storage_service=password_storage
    ).attach(app)
    return app, root, feature


async def test_reset_override_returns_to_the_registration_not_to_an_empty_container(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, module = rotating_app(users, password_storage, logout_path=None)
    async with serve(app) as client:
        pair = await login(client)
        # The usual pytest teardown, with no override made: it used to drop the user lookup
        # (a 500, "Dependency user_lookup not defined").
        module.container.reset_override()
        response = await refresh(client, pair["refreshToken"])
        assert response.status_code == 200, response.text


async def test_reset_override_on_a_feature_keeps_it_on_the_global_store(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _, feature = feature_app(users, password_storage)
    async with serve(app) as client:
        pair = await login(client)  # a family in the global registration's store
        feature.container.reset_override()
        response = await client.post(
            "/feature/refresh", json={"refreshToken": pair["refreshToken"]}
        )
        assert response.status_code == 200, response.text


async def test_override_idioms_stack_and_reset_to_the_configured_lookup(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, module = rotating_app(users, password_storage, logout_path=None)
    nobody, others = InMemoryUsers(), InMemoryUsers(User("user-1", "other@example.com"))
    lookup = module.container.user_lookup
    async with serve(app) as client:
        with lookup.override(providers.Object(nobody)):
            assert lookup() is nobody
            with module.container.override_providers(user_lookup=providers.Object(others)):
                assert lookup() is others
            assert lookup() is nobody
        assert lookup() is users

        lookup.override(providers.Object(nobody))
        lookup.override(providers.Object(others))
        lookup.reset_last_overriding()
        assert lookup() is nobody
        lookup.reset_last_overriding()
        assert lookup() is users
        # As documented: nothing left to reset is an error, not a silent reset of the options.
        with pytest.raises(di_errors.Error):
            lookup.reset_last_overriding()

        lookup.override(providers.Object(nobody))
        pair = await login(client)
        assert_unauthorized(await refresh(client, pair["refreshToken"]))
        module.container.reset_override()
        pair = await login(client)
        assert (await refresh(client, pair["refreshToken"])).status_code == 200


async def test_reset_returns_to_the_async_factory_options(users: InMemoryUsers) -> None:
    module = AuthRefreshModule.for_root_async(factory=lambda: {"user_lookup_service": users})
    app = FastAPI()
    module.attach(app)
    nobody = InMemoryUsers()
    async with serve(app):
        with module.container.user_lookup.override(providers.Object(nobody)):
            assert module.container.user_lookup() is nobody
        module.container.reset_override()
        assert module.container.user_lookup() is users


async def test_overriding_a_features_settings_switches_its_extractor(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _, feature = feature_app(users, password_storage)
    bearer = AuthRefreshSettings(
        jwt_from_request=ExtractJwt.from_auth_header_as_bearer_token(), store_url="memory://"
    )
    async with serve(app) as client:
        pair = await login(client)
        feature.container.settings.override(providers.Object(bearer))
        # The store stays the global one (decided at startup); the extractor follows settings.
        body = await client.post("/feature/refresh", json={"refreshToken": pair["refreshToken"]})
        assert_unauthorized(body, token_sent=False)
        header = await client.post(
            "/feature/refresh", headers={"Authorization": f"Bearer {pair['refreshToken']}"}
        )
        assert header.status_code == 200, header.text
        # The global route keeps the body extractor.
        assert (await refresh(client, header.json()["refreshToken"])).status_code == 200
        feature.container.settings.reset_override()


async def test_a_global_extractor_override_reaches_a_feature_that_inherits_its_settings(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    """What "overridden globally" means: an override on the global registration's container
    reaches every feature that does not set that value itself; one on a feature stays there."""
    app, root, feature = feature_app(users, password_storage)
    bearer = ExtractJwt.from_auth_header_as_bearer_token()
    async with serve(app) as client:
        pair = await login(client)
        with root.container.extractor.override(providers.Object(bearer)):
            response = await client.post(
                "/feature/refresh", headers={"Authorization": f"Bearer {pair['refreshToken']}"}
            )
            assert response.status_code == 200, response.text
        pair = response.json()
        with feature.container.extractor.override(providers.Object(bearer)):
            # The global route still reads the body.
            assert (await refresh(client, pair["refreshToken"])).status_code == 200


async def test_the_feature_container_resolves_through_the_global_one(
    users: InMemoryUsers,
) -> None:
    root = AuthRefreshModule.for_root(user_lookup_service=users)
    feature = AuthRefreshModule.for_feature()
    app = FastAPI()
    root.attach(app)
    feature.attach(app)
    async with serve(app):
        assert feature.container.user_lookup() is users
        assert feature.container.issuer() is root.container.issuer()
        assert feature.container.store() is root.container.store()
        others = InMemoryUsers()
        with root.container.user_lookup.override(providers.Object(others)):
            assert feature.container.user_lookup() is others
        with feature.container.user_lookup.override(providers.Object(others)):
            assert root.container.user_lookup() is users


class ClosingStore(MemoryRefreshTokenStore):
    """The memory store, counting the families it started and its closes."""

    def __init__(self) -> None:
        super().__init__()
        self.families = 0
        self.closed = 0

    async def start_family(self, *args: Any, **kwargs: Any) -> None:
        self.families += 1
        await super().start_family(*args, **kwargs)

    async def close(self) -> None:
        self.closed += 1


def store_app(users: InMemoryUsers, module: AuthRefreshModule, storage: Any) -> FastAPI:
    app = FastAPI()
    module.attach(app)
    AuthLocalModule.for_root(user_lookup_service=users, password_storage_service=storage).attach(
        app
    )
    return app


async def test_a_store_given_to_the_registration_is_used_and_closed_at_shutdown(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    store = ClosingStore()
    module = AuthRefreshModule.for_root(user_lookup_service=users, store=store)
    async with serve(store_app(users, module, password_storage)) as client:
        pair = await login(client)
        assert store.families == 1
        assert (await refresh(client, pair["refreshToken"])).status_code == 200
        assert module.container.store() is store
        assert store.closed == 0
    assert store.closed == 1


async def test_a_store_from_the_options_factory_is_closed_at_shutdown(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    store = ClosingStore()
    module = AuthRefreshModule.for_root_async(
        factory=lambda: {"user_lookup_service": users, "store": store}
    )
    async with serve(store_app(users, module, password_storage)) as client:
        pair = await login(client)
        assert (await refresh(client, pair["refreshToken"])).status_code == 200
        assert module.container.store() is store
    assert store.closed == 1


async def test_a_store_set_by_a_test_override_is_not_closed_by_the_module(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    given, overriding = ClosingStore(), ClosingStore()
    module = AuthRefreshModule.for_root(user_lookup_service=users, store=given)
    with module.container.store.override(providers.Object(overriding)):
        async with serve(store_app(users, module, password_storage)) as client:
            pair = await login(client)
            assert (overriding.families, given.families) == (1, 0)
            assert (await refresh(client, pair["refreshToken"])).status_code == 200
    assert overriding.closed == 0
    assert given.closed == 0  # never opened for this run


async def test_a_feature_does_not_close_the_global_store_it_shares(
    users: InMemoryUsers,
) -> None:
    store = ClosingStore()
    root = AuthRefreshModule.for_root(user_lookup_service=users, store=store)
    feature = AuthRefreshModule.register(path="/feature/refresh")
    app = FastAPI()
    root.attach(app)
    feature.attach(app)
    AuthJwtModule.for_root(user_lookup_service=users).attach(app)
    async with serve(app):
        assert feature.container.store() is store
    assert store.closed == 1


async def test_overrides_made_between_refreshes_apply_to_the_next_one(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    # The refresh walk keeps the rotation service it made: an override must still reach it.
    app, module = rotating_app(users, password_storage)
    container = module.container
    rotated: list[str] = []

    class CountingRotation(TokenRotationService):
        async def rotate_issued(self, claims: Any, **options: Any) -> Any:
            rotated.append(claims["sub"])
            return await super().rotate_issued(claims, **options)

    counting = providers.Factory(
        CountingRotation,
        store=container.store,
        issuer=container.issuer,
        settings=container.settings,
        clock=container.clock,
    )
    async with serve(app) as client:
        pair = await login(client)
        first = await refresh(client, pair["refreshToken"])
        with container.rotation.override(counting):
            second = await refresh(client, first.json()["refreshToken"])
        assert second.status_code == 200, second.text
        assert rotated == ["user-1"]
        token = second.json()["refreshToken"]
        # Another store: the family is unknown there, and the override's reset finds it again.
        with container.store.override(providers.Object(MemoryRefreshTokenStore())):
            assert_unauthorized(await refresh(client, token))
        third = await refresh(client, token)
        assert third.status_code == 200, third.text
        assert rotated == ["user-1"]
