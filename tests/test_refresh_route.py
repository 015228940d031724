"""POST /auth/refresh: the success answer, every 401 case, and its OpenAPI description."""

import re
import time
from typing import Any

import jwt
import pytest
from fastapi import FastAPI

from auth_refresh import AuthenticationModule, AuthRefreshModule, JwtService, JwtSettings
from conftest import ACCESS_SECRET, REFRESH_SECRET, InMemoryUsers, serve
from factories import assert_unauthorized

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def stateless_refresh(jwt_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests refresh tokens signed without a token family: stateless mode (rotation is
    tested in tests/test_rotation*.py)."""
    monkeypatch.setenv("AUTH_REFRESH_ROTATION", "false")


def refresh_app(users: InMemoryUsers, **options: Any) -> FastAPI:
    app = FastAPI()
    AuthRefreshModule.for_root(user_lookup_service=users, **options).attach(app)
    return app


def refresh_token(sub: str = "user-1", **service: Any) -> str:
    return JwtService(JwtSettings(), **service).sign("refresh", {"sub": sub})


async def test_success_is_a_200_token_pair_that_is_not_cached(users: InMemoryUsers) -> None:
    async with serve(refresh_app(users)) as client:
        response = await client.post("/auth/refresh", json={"refreshToken": refresh_token()})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    pair = response.json()
    assert set(pair) == {"accessToken", "refreshToken"}
    verify = AuthenticationModule.for_root().verify_token_service
    assert verify.access_token(pair["accessToken"])["sub"] == "user-1"
    assert verify.refresh_token(pair["refreshToken"])["sub"] == "user-1"


async def test_tokens_issued_in_the_same_second_differ(users: InMemoryUsers) -> None:
    token = refresh_token()
    async with serve(refresh_app(users)) as client:
        first = (await client.post("/auth/refresh", json={"refreshToken": token})).json()
        second = (await client.post("/auth/refresh", json={"refreshToken": token})).json()
    assert first["accessToken"] != second["accessToken"]
    assert first["refreshToken"] != second["refreshToken"]


async def test_the_path_is_configurable(users: InMemoryUsers) -> None:
    async with serve(refresh_app(users, path="/token/refresh")) as client:
        moved = await client.post("/token/refresh", json={"refreshToken": refresh_token()})
        assert moved.status_code == 200
        gone = await client.post("/auth/refresh", json={"refreshToken": refresh_token()})
        assert gone.status_code == 404


@pytest.mark.parametrize(
    "request_options",
    [
        {},
        {"json": {}},
        {"json": {"refreshToken": ""}},
        {"json": {"refreshToken": None}},
        {"json": {"refreshToken": 42}},
        {"json": {"refreshToken": ["a.b.c"]}},
        {"json": {"refresh_token": "a.b.c"}},
        {"content": b"refreshToken=x", "headers": {"content-type": "text/plain"}},
    ],
    ids=["no-body", "empty", "empty-string", "null", "number", "list", "other-field", "text"],
)
async def test_no_token_is_a_401_with_a_bare_challenge(
    users: InMemoryUsers, request_options: dict[str, Any]
) -> None:
    async with serve(refresh_app(users)) as client:
        response = await client.post("/auth/refresh", **request_options)
    assert_unauthorized(response, token_sent=False)


def _expired() -> str:
    return refresh_token(clock=lambda: time.time() - 30 * 86400)


def _forged() -> str:
    other = "another-secret-that-is-long-enough-0123456789"
    return JwtService(JwtSettings(refresh_secret=other)).sign("refresh", {"sub": "user-1"})


def _access_token() -> str:
    return AuthenticationModule.for_root().issue_token_service.access_token({"sub": "user-1"})


def _altered_payload() -> str:
    header, _, signature = refresh_token().split(".")
    payload = jwt.utils.base64url_encode(b'{"sub":"user-2","iat":1,"exp":9999999999,"jti":"x"}')
    return f"{header}.{payload.decode()}.{signature}"


def _unsigned() -> str:
    claims = {"sub": "user-1", "iat": int(time.time()), "exp": int(time.time()) + 60, "jti": "j"}
    return jwt.encode(claims, None, algorithm="none", headers={"typ": "rt+jwt"})


def _without_exp() -> str:
    claims = {"sub": "user-1", "iat": int(time.time()), "jti": "abcdefabcdefabcdef"}
    return jwt.encode(claims, REFRESH_SECRET, algorithm="HS256", headers={"typ": "rt+jwt"})


def _signed_with_access_secret() -> str:
    claims = {"sub": "user-1", "iat": int(time.time()), "exp": int(time.time()) + 60, "jti": "j"}
    return jwt.encode(claims, ACCESS_SECRET, algorithm="HS256", headers={"typ": "rt+jwt"})


BAD_TOKENS = {
    "garbage": lambda: "not-a-jwt",
    "three-dots": lambda: "a.b.c",
    "expired": _expired,
    "forged": _forged,
    "access-token": _access_token,
    "altered-payload": _altered_payload,
    "truncated-signature": lambda: refresh_token()[:-5],
    "alg-none": _unsigned,
    "no-exp": _without_exp,
    "access-secret": _signed_with_access_secret,
    "unknown-subject": lambda: refresh_token("user-404"),
}


@pytest.mark.parametrize("make_token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
async def test_a_bad_token_is_a_401_invalid_token_never_a_500(
    users: InMemoryUsers, make_token: Any
) -> None:
    token = make_token()
    async with serve(refresh_app(users)) as client:
        response = await client.post("/auth/refresh", json={"refreshToken": token})
    assert_unauthorized(response)
    assert token not in response.text


async def test_a_forged_token_costs_no_user_lookup(users: InMemoryUsers) -> None:
    async with serve(refresh_app(users)) as client:
        await client.post("/auth/refresh", json={"refreshToken": _forged()})
        await client.post("/auth/refresh", json={"refreshToken": _expired()})
    assert users.subject_lookups == []


async def test_a_malformed_body_is_a_400_not_a_500(users: InMemoryUsers) -> None:
    async with serve(refresh_app(users)) as client:
        response = await client.post(
            "/auth/refresh",
            content=b'{"refreshToken": ',
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 400
    body = response.json()
    assert body["errorCode"] == "AUTH_REFRESH_INVALID_REQUEST_ERROR"
    assert body["statusCode"] == 400


async def test_the_error_body_has_an_iso_timestamp(users: InMemoryUsers) -> None:
    async with serve(refresh_app(users)) as client:
        body = (await client.post("/auth/refresh")).json()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["timestamp"])


async def test_form_bodies_are_accepted(users: InMemoryUsers) -> None:
    async with serve(refresh_app(users)) as client:
        response = await client.post("/auth/refresh", data={"refreshToken": refresh_token()})
    assert response.status_code == 200


async def test_openapi_documents_the_request_the_answer_and_the_401(users: InMemoryUsers) -> None:
    async with serve(refresh_app(users)) as client:
        schema = (await client.get("/openapi.json")).json()
    operation = schema["paths"]["/auth/refresh"]["post"]
    request_schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert request_schema["required"] == ["refreshToken"]
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/TokenPairBody"}
    assert set(schema["components"]["schemas"]["TokenPairBody"]["required"]) == {
        "accessToken",
        "refreshToken",
    }
    unauthorized = operation["responses"]["401"]["content"]["application/json"]["schema"]
    assert unauthorized == {"$ref": "#/components/schemas/ErrorBody"}


async def test_openapi_follows_the_configured_extractor(users: InMemoryUsers) -> None:
    from auth_refresh import ExtractJwt

    app = refresh_app(
        users, settings={"jwt_from_request": ExtractJwt.from_header("x-refresh-token")}
    )
    async with serve(app) as client:
        schema = (await client.get("/openapi.json")).json()
    operation = schema["paths"]["/auth/refresh"]["post"]
    assert "requestBody" not in operation
    # A security scheme, which Swagger UI fills in and sends (an Authorization parameter
    # would be ignored).
    assert operation["security"] == [{"RefreshTokenHeader": []}]
    assert schema["components"]["securitySchemes"]["RefreshTokenHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "x-refresh-token",
        "description": "A refresh token",
    }
