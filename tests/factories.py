"""Helpers for driving the tutorial flow in tests (the apps are in rotation_app.py)."""

from __future__ import annotations

import httpx


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
