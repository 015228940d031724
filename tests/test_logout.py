"""POST /auth/logout: revokes the presented refresh token's family, 204; and a store that cannot
answer is a 503 with Retry-After, never a token."""

from __future__ import annotations

import importlib
from pathlib import Path

import httpx
import pytest

from auth_refresh import AuthenticationModule, PasswordStorageService
from conftest import InMemoryUsers, serve
from factories import assert_unauthorized, login
from rotation_app import assert_store_unavailable, refresh, rotating_app
from servers import ROOT

pytestmark = pytest.mark.anyio


async def logout(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/auth/logout", json={"refreshToken": token})


async def test_logout_revokes_the_session_and_answers_204_without_a_body(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = rotating_app(users, password_storage)
    async with serve(app) as client:
        first = (await login(client))["refreshToken"]
        live = (await refresh(client, first)).json()["refreshToken"]
        other_session = (await login(client))["refreshToken"]
        answer = await logout(client, live)
        assert answer.status_code == 204
        assert answer.content == b""
        assert answer.headers["cache-control"] == "no-store"
        assert_unauthorized(await refresh(client, live))
        # The whole family: the token consumed just now is not a way back in either.
        assert_unauthorized(await refresh(client, first))
        assert (await refresh(client, other_session)).status_code == 200
        # Logging out again changes nothing and tells nothing.
        assert (await logout(client, live)).status_code == 204


async def test_logout_with_a_consumed_token_still_ends_the_family(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = rotating_app(users, password_storage)
    async with serve(app) as client:
        first = (await login(client))["refreshToken"]
        live = (await refresh(client, first)).json()["refreshToken"]
        assert (await logout(client, first)).status_code == 204
        assert_unauthorized(await refresh(client, live))


async def test_logout_refuses_what_refresh_refuses(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = rotating_app(users, password_storage)
    issuer = AuthenticationModule.for_root().issue_token_service
    async with serve(app) as client:
        pair = await login(client)
        assert_unauthorized(await client.post("/auth/logout", json={}), token_sent=False)
        assert_unauthorized(await client.post("/auth/logout"), token_sent=False)
        for token in (
            "not-a-token",
            pair["accessToken"],  # an access token is not a refresh token
            issuer.refresh_token({"sub": "user-1"}),  # no family to revoke
            pair["refreshToken"][:-4] + "AAAA",  # a forged signature
        ):
            assert_unauthorized(await logout(client, token))
        # None of that logged the session out.
        assert (await refresh(client, pair["refreshToken"])).status_code == 200


async def test_logout_is_off_unless_asked_for(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = rotating_app(users, password_storage, logout_path=None)
    async with serve(app) as client:
        token = (await login(client))["refreshToken"]
        assert (await logout(client, token)).status_code == 404


async def test_the_logout_path_is_configurable_and_documented(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = rotating_app(users, password_storage, logout_path="/session/end")
    async with serve(app) as client:
        token = (await login(client))["refreshToken"]
        ended = await client.post("/session/end", json={"refreshToken": token})
        assert ended.status_code == 204
        schema = (await client.get("/openapi.json")).json()
    operation = schema["paths"]["/session/end"]["post"]
    assert set(operation["responses"]) == {"204", "400", "401", "413", "503"}
    assert operation["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "refreshToken"
    ]
    refresh_operation = schema["paths"]["/auth/refresh"]["post"]
    assert "503" in refresh_operation["responses"]


async def test_a_store_that_cannot_answer_is_a_503_for_login_refresh_and_logout(
    users: InMemoryUsers, password_storage: PasswordStorageService, tmp_path: Path
) -> None:
    # A real failure: the "file" is a directory, so SQLite cannot open it.
    (tmp_path / "families.db").mkdir()
    settings = {"store_url": f"sqlite:///{tmp_path / 'families.db'}"}
    app, _ = rotating_app(users, password_storage, settings=settings)
    token = AuthenticationModule.for_root().issue_token_service.refresh_token(
        {"sub": "user-1", "fam": "a-family-the-store-cannot-look-up"}
    )
    async with serve(app) as client:
        credentials = {"username": "user@example.com", "password": "password"}
        assert_store_unavailable(await client.post("/auth/login", json=credentials))
        assert_store_unavailable(await refresh(client, token))
        assert_store_unavailable(await logout(client, token))
        # Checks that need no store still answer first: a bad token is a 401, not a 503.
        assert_unauthorized(await refresh(client, "not-a-token"))


@pytest.mark.parametrize("example", ["sync_registration", "async_registration"])
async def test_the_examples_log_in_refresh_and_log_out(
    example: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    app = importlib.import_module(f"examples.{example}.app").app
    async with serve(app) as client:
        pair = await login(client)
        refreshed = (await refresh(client, pair["refreshToken"])).json()
        me = await client.get(
            "/me", headers={"Authorization": f"Bearer {refreshed['accessToken']}"}
        )
        assert me.json() == {"id": "user-1", "username": "user@example.com"}
        assert (await logout(client, refreshed["refreshToken"])).status_code == 204
        assert_unauthorized(await refresh(client, refreshed["refreshToken"]))
        # The mobile route shares the store: the session is over there too.
        mobile = await client.post(
            "/auth/mobile/refresh",
            headers={"Authorization": f"Bearer {refreshed['refreshToken']}"},
        )
        assert_unauthorized(mobile)
