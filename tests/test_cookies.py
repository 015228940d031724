"""Cookie transport: every cookie attribute, the CSRF rules, logout, and races."""

import asyncio
import logging
import time
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from auth_refresh import (
    AuthRefreshModule,
    ConfigurationError,
    ExtractJwt,
    JwtModule,
    PasswordStorageService,
)
from auth_refresh.transport.cookies import CookieTransport, csrf_keys_of, csrf_token_for
from conftest import InMemoryUsers, serve
from rotation_app import rotating_app

pytestmark = pytest.mark.anyio

CREDENTIALS = {"username": "user@example.com", "password": "password"}
REFRESH_LIFETIME = 7 * 86400


def cookie_app(
    users: InMemoryUsers, storage: PasswordStorageService, **settings: Any
) -> tuple[FastAPI, AuthRefreshModule]:
    return rotating_app(users, storage, settings={"cookie_transport": True, **settings})


def set_cookies(response: httpx.Response) -> list[SimpleCookie]:
    parsed = []
    for header in response.headers.get_list("set-cookie"):
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(header)
        parsed.append(cookie)
    return parsed


def cookie_attributes(response: httpx.Response, name: str) -> list[dict[str, Any]]:
    """Each Set-Cookie of ``name``: its value and attributes, flags as booleans."""
    found = []
    for header in response.headers.get_list("set-cookie"):
        parts = [part.strip() for part in header.split(";")]
        cookie_name, _, value = parts[0].partition("=")
        if cookie_name != name:
            continue
        attributes: dict[str, Any] = {"value": value}
        for part in parts[1:]:
            key, has_value, attribute = part.partition("=")
            attributes[key.lower()] = attribute if has_value else True
        found.append(attributes)
    return found


async def login(client: httpx.AsyncClient) -> httpx.Response:
    response = await client.post("/auth/login", json=CREDENTIALS)
    assert response.status_code == 200, response.text
    return response


def https_client(app: FastAPI) -> Any:
    # Secure cookies are only sent over https, as a browser does.
    return serve(app, base_url="https://testserver")


async def test_login_sets_an_http_only_refresh_cookie_limited_to_refresh_and_logout(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, module = cookie_app(users, password_storage)
    async with https_client(app) as client:
        response = await login(client)
    [key] = csrf_keys_of(module.container.settings(), module.container.issuer())
    body = response.json()
    assert set(body) == {"accessToken", "csrfToken"}
    refresh_cookies = cookie_attributes(response, "refresh_token")
    assert sorted(cookie["path"] for cookie in refresh_cookies) == ["/auth/logout", "/auth/refresh"]
    for cookie in refresh_cookies:
        assert cookie["httponly"] is True
        assert cookie["secure"] is True
        assert cookie["samesite"] == "strict"
        assert REFRESH_LIFETIME - 5 <= int(cookie["max-age"]) <= REFRESH_LIFETIME
        assert body["csrfToken"] == csrf_token_for(cookie["value"], key=key)
    [csrf_cookie] = cookie_attributes(response, "csrf_token")
    assert csrf_cookie["value"] == body["csrfToken"]
    assert "httponly" not in csrf_cookie  # the page must be able to read it
    assert csrf_cookie["path"] == "/"
    assert csrf_cookie["secure"] is True
    assert response.headers["cache-control"] == "no-store"


async def test_refresh_with_the_cookie_and_its_csrf_token_rotates_the_cookie(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, module = cookie_app(users, password_storage)
    async with https_client(app) as client:
        first = await login(client)
        old_cookie = cookie_attributes(first, "refresh_token")[0]["value"]
        refreshed = await client.post(
            "/auth/refresh", headers={"X-CSRF-Token": first.json()["csrfToken"]}
        )
        assert refreshed.status_code == 200, refreshed.text
        new_cookie = cookie_attributes(refreshed, "refresh_token")[0]["value"]
        assert new_cookie != old_cookie
        key = csrf_keys_of(module.container.settings(), module.container.issuer())[0]
        assert refreshed.json()["csrfToken"] == csrf_token_for(new_cookie, key=key)
        assert refreshed.json()["csrfToken"] == first.json()["csrfToken"]  # the session's
        # The client now holds the new cookie, which works with the same CSRF token.
        again = await client.post(
            "/auth/refresh", headers={"X-CSRF-Token": refreshed.json()["csrfToken"]}
        )
        assert again.status_code == 200


@pytest.mark.parametrize("csrf", [None, "", "not-the-token", "other-session"])
async def test_a_cookie_without_its_csrf_token_is_a_403_and_consumes_nothing(
    users: InMemoryUsers,
    password_storage: PasswordStorageService,
    csrf: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, _ = cookie_app(users, password_storage)
    async with https_client(app) as client:
        if csrf == "other-session":
            csrf = (await login(client)).json()["csrfToken"]
            client.cookies.clear()
        session = await login(client)
        headers = {} if csrf is None else {"X-CSRF-Token": csrf}
        with caplog.at_level(logging.WARNING, logger="auth_refresh.security"):
            refused = await client.post("/auth/refresh", headers=headers)
        assert refused.status_code == 403
        assert [r.message for r in caplog.records if r.message.startswith("refresh cookie")] == [
            "refresh cookie refused: no CSRF token"
            if not csrf
            else "refresh cookie refused: wrong CSRF token"
        ]
        assert all(session.json()["csrfToken"] not in r.message for r in caplog.records)
        assert refused.json()["errorCode"] == "AUTH_REFRESH_CSRF_ERROR"
        assert "set-cookie" not in refused.headers
        assert "eyJ" not in refused.text
        # The token was not consumed: the real page can still refresh with it.
        accepted = await client.post(
            "/auth/refresh", headers={"X-CSRF-Token": session.json()["csrfToken"]}
        )
        assert accepted.status_code == 200


async def test_the_csrf_token_is_the_session_s_across_rotations(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    """A tab that read the CSRF token before another tab rotated the cookie still matches."""
    app, _ = cookie_app(users, password_storage)
    async with https_client(app) as client:
        csrf = (await login(client)).json()["csrfToken"]
        first = await client.post("/auth/refresh", headers={"X-CSRF-Token": csrf})
        second = await client.post("/auth/refresh", headers={"X-CSRF-Token": csrf})
        assert first.status_code == second.status_code == 200
        assert first.json()["csrfToken"] == second.json()["csrfToken"] == csrf
        client.cookies.clear()
        other_session = (await login(client)).json()["csrfToken"]
    assert other_session != csrf


async def test_a_token_in_the_body_needs_no_csrf_token(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = cookie_app(users, password_storage, cookie_body_refresh_token=True)
    async with https_client(app) as client:
        body = (await login(client)).json()
        assert set(body) == {"accessToken", "csrfToken", "refreshToken"}
        client.cookies.clear()  # a script or app holding the token itself
        response = await client.post("/auth/refresh", json={"refreshToken": body["refreshToken"]})
    assert response.status_code == 200


async def test_a_cookie_and_a_different_body_token_are_a_400(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = cookie_app(users, password_storage, cookie_body_refresh_token=True)
    async with https_client(app) as client:
        other_token = (await login(client)).json()["refreshToken"]
        client.cookies.clear()
        csrf = (await login(client)).json()["csrfToken"]
        response = await client.post(
            "/auth/refresh", json={"refreshToken": other_token}, headers={"X-CSRF-Token": csrf}
        )
    assert response.status_code == 400
    assert response.json()["errorCode"] == "AUTH_REFRESH_INVALID_REQUEST_ERROR"


async def test_logout_clears_the_cookies_and_ends_the_session(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = cookie_app(users, password_storage)
    async with https_client(app) as client:
        session = await login(client)
        refresh_cookie = cookie_attributes(session, "refresh_token")[0]["value"]
        logout = await client.post(
            "/auth/logout", headers={"X-CSRF-Token": session.json()["csrfToken"]}
        )
        assert logout.status_code == 204
        cleared = cookie_attributes(logout, "refresh_token")
        assert sorted(cookie["path"] for cookie in cleared) == ["/auth/logout", "/auth/refresh"]
        assert all(cookie["max-age"] == "0" and cookie["value"] in ("", '""') for cookie in cleared)
        assert cookie_attributes(logout, "csrf_token")[0]["max-age"] == "0"
        assert "refresh_token" not in client.cookies
        # A copy of the cookie taken before logout is worthless now.
        client.cookies.set(
            "refresh_token", refresh_cookie, domain="testserver", path="/auth/refresh"
        )
        response = await client.post(
            "/auth/refresh", headers={"X-CSRF-Token": session.json()["csrfToken"]}
        )
    assert response.status_code == 401


async def test_logout_from_the_cookie_needs_the_csrf_token(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = cookie_app(users, password_storage)
    async with https_client(app) as client:
        session = await login(client)
        assert (await client.post("/auth/logout")).status_code == 403
        still = await client.post(
            "/auth/refresh", headers={"X-CSRF-Token": session.json()["csrfToken"]}
        )
        assert still.status_code == 200


async def test_racing_tabs_within_the_grace_window_all_get_the_same_cookie(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = cookie_app(users, password_storage)
    async with https_client(app) as client:
        session = await login(client)
        headers = {"X-CSRF-Token": session.json()["csrfToken"]}
        # Built first, so every tab sends the same cookie, as racing tabs do.
        requests = [client.build_request("POST", "/auth/refresh", headers=headers)] * 5
        answers = await asyncio.gather(*(client.send(request) for request in requests))
    assert {answer.status_code for answer in answers} == {200}
    cookies = {cookie_attributes(answer, "refresh_token")[0]["value"] for answer in answers}
    assert len(cookies) == 1
    # Never a cookie that deletes the winner's.
    for answer in answers:
        assert all(
            cookie["max-age"] != "0" for cookie in cookie_attributes(answer, "refresh_token")
        )


async def test_cookie_name_and_same_site_are_settings(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = cookie_app(
        users, password_storage, cookie_name="session_refresh", cookie_same_site="lax"
    )
    async with https_client(app) as client:
        session = await login(client)
        [first, *_] = cookie_attributes(session, "session_refresh")
        assert first["samesite"] == "lax"
        assert cookie_attributes(session, "refresh_token") == []
        refreshed = await client.post(
            "/auth/refresh", headers={"X-CSRF-Token": session.json()["csrfToken"]}
        )
        assert refreshed.status_code == 200


async def test_insecure_cookies_are_for_localhost_development_and_warn(
    users: InMemoryUsers, password_storage: PasswordStorageService, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = cookie_app(users, password_storage, cookie_secure=False)
    with caplog.at_level(logging.WARNING, logger="auth_refresh"):
        async with serve(app) as client:  # plain http
            session = await login(client)
            refreshed = await client.post(
                "/auth/refresh", headers={"X-CSRF-Token": session.json()["csrfToken"]}
            )
    assert refreshed.status_code == 200
    assert all("secure" not in cookie for cookie in cookie_attributes(session, "refresh_token"))
    assert any("AUTH_REFRESH_COOKIE_SECURE is false" in record.message for record in caplog.records)


def test_same_site_none_needs_secure_cookies(users: InMemoryUsers) -> None:
    with pytest.raises(ConfigurationError, match="COOKIE_SAME_SITE=none needs"):
        AuthRefreshModule.for_root(
            user_lookup_service=users,
            settings={"cookie_transport": True, "cookie_same_site": "none", "cookie_secure": False},
        )


async def test_without_cookie_transport_no_cookie_is_set(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = cookie_app(users, password_storage, cookie_transport=False)
    async with https_client(app) as client:
        response = await login(client)
    assert "set-cookie" not in response.headers
    assert set(response.json()) == {"accessToken", "refreshToken"}


async def test_openapi_documents_the_cookie_the_csrf_header_and_the_403(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = cookie_app(users, password_storage)
    async with https_client(app) as client:
        schema = (await client.get("/openapi.json")).json()
    operation = schema["paths"]["/auth/refresh"]["post"]
    parameters = {(p["in"], p["name"]) for p in operation["parameters"]}
    assert parameters == {("header", "X-CSRF-Token")}
    # The cookie is a security scheme (an API key in a cookie), the body its alternative.
    assert operation["security"] == [{"RefreshTokenCookie": []}, {}]
    cookie = schema["components"]["securitySchemes"]["RefreshTokenCookie"]
    assert (cookie["type"], cookie["in"], cookie["name"]) == ("apiKey", "cookie", "refresh_token")
    assert operation["requestBody"]["required"] is False
    assert operation["responses"]["403"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/CookieTokenBody"}
    logout = schema["paths"]["/auth/logout"]["post"]
    assert ("header", "X-CSRF-Token") in {(p["in"], p["name"]) for p in logout["parameters"]}
    assert {"403", "413"} <= set(logout["responses"])
    # The body fallback of the cookie-then-body chain is documented too.
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"] == {"refreshToken": {"type": "string"}}
    assert "Set-Cookie" in operation["responses"]["200"]["headers"]
    login = schema["paths"]["/auth/login"]["post"]
    assert {"400", "401", "403", "413", "503"} <= set(login["responses"])
    login_ok = login["responses"]["200"]
    assert login_ok["content"]["application/json"]["schema"] == ok
    assert "Set-Cookie" in login_ok["headers"]


async def test_without_cookie_transport_login_documents_the_token_pair(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = cookie_app(users, password_storage, cookie_transport=False)
    async with serve(app) as client:
        schema = (await client.get("/openapi.json")).json()
    ok = schema["paths"]["/auth/login"]["post"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TokenPairBody"
    }
    assert "403" not in schema["paths"]["/auth/login"]["post"]["responses"]


CROSS_SITE = {"Sec-Fetch-Site": "cross-site"}


async def test_a_cross_site_post_with_a_token_of_its_own_sets_no_cookie(
    users: InMemoryUsers, password_storage: PasswordStorageService, caplog: pytest.LogCaptureFixture
) -> None:
    """Login CSRF: an attacker's page posts the attacker's own refresh token (or credentials)
    as a form, to plant the attacker's session in the victim's browser."""
    app, _ = cookie_app(users, password_storage, cookie_body_refresh_token=True)
    async with https_client(app) as client:
        attackers_token = (await login(client)).json()["refreshToken"]
        client.cookies.clear()
        form = {"refreshToken": attackers_token}
        with caplog.at_level(logging.WARNING, logger="auth_refresh.security"):
            refused = await client.post("/auth/refresh", data=form, headers=CROSS_SITE)
            refused_login = await client.post("/auth/login", data=CREDENTIALS, headers=CROSS_SITE)
        for response in (refused, refused_login):
            assert response.status_code == 403
            assert response.json()["errorCode"] == "AUTH_REFRESH_CSRF_ERROR"
            assert response.json()["message"] == "Cross-site requests are refused"
            assert "set-cookie" not in response.headers
        assert [r.message for r in caplog.records] == [
            "cookie transport: cross-site request refused"
        ] * 2
        # The token was not consumed; the same request from the application's own pages works.
        for site in ("same-origin", "same-site", "none"):
            accepted = await client.post(
                "/auth/refresh", data=form, headers={"Sec-Fetch-Site": site}
            )
            assert accepted.status_code == 200, site
            form = {"refreshToken": accepted.json()["refreshToken"]}
            client.cookies.clear()  # the token again in the body only, not the cookie
        assert (await client.post("/auth/login", data=CREDENTIALS)).status_code == 200


async def test_with_same_site_none_cross_site_requests_are_the_application_s_own(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = cookie_app(users, password_storage, cookie_same_site="none")
    async with https_client(app) as client:
        session = await client.post("/auth/login", json=CREDENTIALS, headers=CROSS_SITE)
        assert session.status_code == 200
        refreshed = await client.post(
            "/auth/refresh", headers={**CROSS_SITE, "X-CSRF-Token": session.json()["csrfToken"]}
        )
    assert refreshed.status_code == 200


async def test_the_cookie_ends_with_the_session_s_absolute_lifetime(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = cookie_app(users, password_storage, absolute_lifetime=100)
    async with https_client(app) as client:
        session = await login(client)
    for cookie in cookie_attributes(session, "refresh_token"):
        assert 95 <= int(cookie["max-age"]) <= 100


def test_the_cookie_lives_as_long_as_the_token_it_carries() -> None:
    service = JwtModule.for_root().service
    now = int(time.time())
    # A token with less life left than the configured lifetime (a grace-window repeat of a
    # pair signed earlier, or a shortened exp).
    refresh_token = service.sign("refresh", {"sub": "user-1", "exp": now + 100})
    access_token = service.sign("access", {"sub": "user-1"})
    transport = CookieTransport(
        cookie_name="refresh_token",
        paths=("/auth/refresh",),
        secure=True,
        same_site="strict",
        body_refresh_token=False,
        csrf_keys=(b"k" * 32,),
    )
    response = transport.token_response(
        {"accessToken": access_token, "refreshToken": refresh_token}
    )
    max_ages = [
        int(header.split("Max-Age=")[1].split(";")[0])
        for header in response.headers.getlist("set-cookie")
    ]
    assert len(max_ages) == 2  # the refresh cookie and the CSRF cookie
    assert all(98 <= max_age <= 100 for max_age in max_ages)


async def test_a_custom_extractor_claims_no_request_body_in_openapi(users: InMemoryUsers) -> None:
    app = FastAPI()
    AuthRefreshModule.for_root(
        user_lookup_service=users,
        settings={"jwt_from_request": lambda request: request.headers.get("x-token")},
    ).attach(app)
    async with serve(app) as client:
        operation = (await client.get("/openapi.json")).json()["paths"]["/auth/refresh"]["post"]
    assert "requestBody" not in operation
    assert "parameters" not in operation
    # A built-in one still describes itself.
    assert ExtractJwt.from_header("x-token").openapi()["parameters"][0]["name"] == "x-token"
