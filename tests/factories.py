"""Small real applications for the tests: login, an access-guarded /me, and refresh."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI

from auth_refresh import (
    AuthenticationModule,
    AuthJwtGuard,
    AuthJwtModule,
    AuthLocalModule,
    AuthRefreshModule,
    PasswordStorageService,
)


def tutorial_app(
    users: Any,
    password_storage: PasswordStorageService,
    refresh_module: AuthRefreshModule | None = None,
) -> FastAPI:
    """The tutorial's application: POST /auth/login, POST /auth/refresh, GET /me."""
    authentication = AuthenticationModule.for_root()
    app = FastAPI()
    AuthLocalModule.for_root(
        user_lookup_service=users,
        issue_token_service=authentication.issue_token_service,
        password_storage_service=password_storage,
    ).attach(app)
    AuthJwtModule.for_root(
        user_lookup_service=users, verify_token_service=authentication.verify_token_service
    ).attach(app)
    (refresh_module or AuthRefreshModule.for_root(user_lookup_service=users)).attach(app)

    @app.get("/me")
    async def me(user: Annotated[Any, Depends(AuthJwtGuard())]) -> dict[str, str]:
        return {"id": user.id}

    return app


async def login(client: httpx.AsyncClient) -> dict[str, str]:
    response = await client.post(
        "/auth/login", json={"username": "user@example.com", "password": "password"}
    )
    assert response.status_code == 200, response.text
    pair: dict[str, str] = response.json()
    return pair


def assert_unauthorized(response: httpx.Response, *, token_sent: bool = True) -> None:
    """A refresh refusal: 401, the documented body and challenge, and no token anywhere."""
    assert response.status_code == 401, response.text
    body = response.json()
    assert set(body) == {"statusCode", "errorCode", "message", "timestamp"}
    assert body["statusCode"] == 401
    assert body["errorCode"] == "AUTH_REFRESH_NOT_AUTHORIZED_ERROR"
    assert body["message"] == "Unauthorized refresh attempt"
    expected = 'Bearer error="invalid_token"' if token_sent else "Bearer"
    assert response.headers["www-authenticate"] == expected
    assert "eyJ" not in response.text
