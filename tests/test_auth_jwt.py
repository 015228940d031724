"""AuthJwtGuard: routes protected by an access token."""

from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI

from auth_refresh import AuthenticationModule, AuthJwtGuard, AuthJwtModule, ExtractJwt
from conftest import InMemoryUsers, serve

pytestmark = pytest.mark.anyio


def protected_app(users: InMemoryUsers, **options: Any) -> FastAPI:
    app = FastAPI()
    module = AuthJwtModule.for_root(user_lookup_service=users, **options)
    module.attach(app)

    @app.get("/me")
    async def me(user: Annotated[Any, Depends(AuthJwtGuard())]) -> dict[str, str]:
        return {"id": user.id}

    @app.get("/qualified")
    async def qualified(user: Annotated[Any, Depends(module.guard)]) -> dict[str, str]:
        return {"id": user.id}

    return app


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_valid_access_token_yields_the_user(users: InMemoryUsers) -> None:
    token = AuthenticationModule.for_root().issue_token_service.access_token({"sub": "user-1"})
    async with serve(protected_app(users)) as client:
        assert (await client.get("/me", headers=bearer(token))).json() == {"id": "user-1"}
        assert (await client.get("/qualified", headers=bearer(token))).json() == {"id": "user-1"}


async def test_no_token_is_a_401_with_a_bare_challenge(users: InMemoryUsers) -> None:
    async with serve(protected_app(users)) as client:
        response = await client.get("/me")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["errorCode"] == "AUTH_JWT_NOT_AUTHORIZED_ERROR"


@pytest.mark.parametrize("kind", ["refresh-token", "garbage", "unknown-subject"])
async def test_a_bad_token_is_a_401_invalid_token(users: InMemoryUsers, kind: str) -> None:
    issue = AuthenticationModule.for_root().issue_token_service
    token = {
        "refresh-token": issue.refresh_token({"sub": "user-1"}),
        "garbage": "a.b.c",
        "unknown-subject": issue.access_token({"sub": "user-404"}),
    }[kind]
    async with serve(protected_app(users)) as client:
        response = await client.get("/me", headers=bearer(token))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert response.json()["errorCode"] == "AUTH_JWT_NOT_AUTHORIZED_ERROR"
    assert token not in response.text


async def test_the_extractor_is_configurable(users: InMemoryUsers) -> None:
    token = AuthenticationModule.for_root().issue_token_service.access_token({"sub": "user-1"})
    app = protected_app(users, jwt_from_request=ExtractJwt.from_cookie("access"))
    async with serve(app) as client:
        assert (await client.get("/me", headers={"Cookie": f"access={token}"})).status_code == 200
        assert (await client.get("/me", headers=bearer(token))).status_code == 401


async def test_an_inactive_user_is_refused_even_with_a_valid_access_token() -> None:
    from conftest import User

    disabled = User("user-1", "user@example.com")
    disabled.active = False  # type: ignore[attr-defined]
    token = AuthenticationModule.for_root().issue_token_service.access_token({"sub": "user-1"})
    async with serve(protected_app(InMemoryUsers(disabled))) as client:
        response = await client.get("/me", headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["errorCode"] == "AUTH_JWT_NOT_AUTHORIZED_ERROR"
