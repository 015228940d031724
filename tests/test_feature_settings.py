"""A feature's settings are the global registration's with the feature's own merged over them
(issue 23, item 2), also when a test overrides the global settings; ``jwt_from_request`` is an
option of its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from dependency_injector import providers
from fastapi import FastAPI

from auth_refresh import (
    AuthLocalModule,
    AuthRefreshModule,
    AuthRefreshSettings,
    ConfigurationError,
    ExtractJwt,
    PasswordStorageService,
)
from conftest import InMemoryUsers, serve
from factories import assert_unauthorized, login

pytestmark = pytest.mark.anyio

BEARER = ExtractJwt.from_auth_header_as_bearer_token()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def app_with_feature(
    users: InMemoryUsers,
    password_storage: PasswordStorageService,
    root_settings: dict[str, object],
    **feature_options: object,
) -> tuple[FastAPI, AuthRefreshModule, AuthRefreshModule]:
    """The global registration with the login; a feature on /mobile/refresh."""
    app = FastAPI()
    root = AuthRefreshModule.for_root(user_lookup_service=users, settings=root_settings)
    feature = AuthRefreshModule.for_feature(
        controllers=True,
        path="/mobile/refresh",
        **feature_options,  # type: ignore[arg-type]
    )
    root.attach(app)
    feature.attach(app)
    AuthLocalModule.for_root(
        user_lookup_service=users, password_storage_service=password_storage
    ).attach(app)
    return app, root, feature


async def test_a_features_settings_merge_over_the_global_ones_store_url_included(
    users: InMemoryUsers,
    password_storage: PasswordStorageService,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # The store URL in code only: a feature falling back to the default would open
    # ./auth-refresh.db and know none of the global registration's families.
    monkeypatch.delenv("AUTH_REFRESH_STORE_URL")
    monkeypatch.chdir(tmp_path)
    store_url = f"sqlite:///{tmp_path / 'families.db'}"
    app, _, feature = app_with_feature(
        users,
        password_storage,
        {"grace_seconds": 0, "absolute_lifetime": 3600, "store_url": store_url},
        settings={"jwt_from_request": BEARER},
    )
    async with serve(app) as client:
        settings = feature.container.settings()
        assert (settings.grace_seconds, settings.absolute_lifetime) == (0, 3600)
        assert settings.store_url == store_url
        assert settings.jwt_from_request is BEARER
        pair = await login(client)  # a family in the global registration's store
        response = await client.post("/mobile/refresh", headers=bearer(pair["refreshToken"]))
        assert response.status_code == 200, response.text
        # Grace 0, as the global registration says: the token just used is a reuse now.
        again = await client.post("/mobile/refresh", headers=bearer(pair["refreshToken"]))
        assert_unauthorized(again)
    assert not (tmp_path / "auth-refresh.db").exists()


async def test_an_override_of_the_global_settings_reaches_the_feature(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, root, feature = app_with_feature(
        users,
        password_storage,
        {"grace_seconds": 0},
        settings={"jwt_from_request": BEARER},
    )
    async with serve(app) as client:
        pair = await login(client)
        overridden = AuthRefreshSettings(grace_seconds=30, absolute_lifetime=60)
        with root.container.settings.override(providers.Object(overridden)):
            settings = feature.container.settings()
            assert (settings.grace_seconds, settings.absolute_lifetime) == (30, 60)
            assert settings.jwt_from_request is BEARER  # the feature's own value stays
            first = await client.post("/mobile/refresh", headers=bearer(pair["refreshToken"]))
            assert first.status_code == 200, first.text
            # Within the overridden grace window: the same successor, not a reuse.
            repeat = await client.post("/mobile/refresh", headers=bearer(pair["refreshToken"]))
            assert repeat.status_code == 200, repeat.text
            assert repeat.json() == first.json()
        assert feature.container.settings().grace_seconds == 0


async def test_an_override_of_the_features_settings_still_wins(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _, feature = app_with_feature(
        users, password_storage, {"grace_seconds": 0}, settings={"jwt_from_request": BEARER}
    )
    async with serve(app):
        mine = AuthRefreshSettings(grace_seconds=7)
        with feature.container.settings.override(providers.Object(mine)):
            assert feature.container.settings() is mine
        assert feature.container.settings().grace_seconds == 0


async def test_jwt_from_request_is_an_option_of_its_own(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _, feature = app_with_feature(
        users, password_storage, {"grace_seconds": 0}, jwt_from_request=BEARER
    )
    async with serve(app) as client:
        assert feature.container.extractor() is BEARER
        assert feature.container.settings().grace_seconds == 0  # all global, merged or not
        pair = await login(client)
        body = await client.post("/mobile/refresh", json={"refreshToken": pair["refreshToken"]})
        assert_unauthorized(body, token_sent=False)
        header = await client.post("/mobile/refresh", headers=bearer(pair["refreshToken"]))
        assert header.status_code == 200, header.text
        # The global route keeps reading the body.
        refreshed = await client.post(
            "/auth/refresh", json={"refreshToken": header.json()["refreshToken"]}
        )
        assert refreshed.status_code == 200, refreshed.text


def test_the_extractor_is_given_once(users: InMemoryUsers) -> None:
    with pytest.raises(ConfigurationError, match="give the extractor once"):
        AuthRefreshModule.for_feature(
            jwt_from_request=BEARER, settings={"jwt_from_request": BEARER}
        )


async def test_a_feature_without_a_global_registration_uses_its_own_settings(
    users: InMemoryUsers,
) -> None:
    feature = AuthRefreshModule.register(
        user_lookup_service=users, settings={"grace_seconds": 0}, path="/mobile/refresh"
    )
    app = FastAPI()
    feature.attach(app)
    async with serve(app):
        settings = feature.container.settings()
        assert settings.grace_seconds == 0
        assert settings.absolute_lifetime == 30 * 86400  # the default
