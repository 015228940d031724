"""Cookie prefixes: ``__Secure-`` and ``__Host-`` before the refresh and CSRF cookies' names,
with the attributes browsers demand of them, read back under that name only; a setting a
browser would refuse is refused at startup."""

from typing import Any

import pytest

from auth_refresh import AuthRefreshModule, ConfigurationError, PasswordStorageService
from conftest import InMemoryUsers
from rotation_app import rotating_app
from test_cookies import cookie_app, cookie_attributes, https_client, login

pytestmark = pytest.mark.anyio

PATHS = {"__Secure-": ["/auth/logout", "/auth/refresh"], "__Host-": ["/"]}


@pytest.mark.parametrize("prefix", ["__Secure-", "__Host-"])
async def test_a_prefixed_session_works_end_to_end_with_the_browser_s_rules(
    prefix: str, users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = cookie_app(users, password_storage, cookie_prefix=prefix)
    refresh_name, csrf_name = prefix + "refresh_token", prefix + "csrf_token"
    async with https_client(app) as client:
        session = await login(client)
        assert cookie_attributes(session, "refresh_token") == []
        assert cookie_attributes(session, "csrf_token") == []
        refresh_cookies = cookie_attributes(session, refresh_name)
        assert sorted(cookie["path"] for cookie in refresh_cookies) == PATHS[prefix]
        for cookie in refresh_cookies:
            assert cookie["secure"] is True
            assert cookie["httponly"] is True
            assert "domain" not in cookie
        [csrf_cookie] = cookie_attributes(session, csrf_name)
        assert csrf_cookie["secure"] is True
        assert csrf_cookie["path"] == "/"
        assert "domain" not in csrf_cookie
        assert csrf_cookie["value"] == session.json()["csrfToken"]

        # The client keeps the cookies, as a browser: refresh reads the prefixed one.
        headers = {"X-CSRF-Token": client.cookies[csrf_name]}
        refreshed = await client.post("/auth/refresh", headers=headers)
        assert refreshed.status_code == 200, refreshed.text
        [rotated, *_] = cookie_attributes(refreshed, refresh_name)
        assert rotated["value"] != refresh_cookies[0]["value"]
        again = await client.post("/auth/refresh", headers=headers)
        assert again.status_code == 200, again.text

        logout = await client.post("/auth/logout", headers=headers)
        assert logout.status_code == 204
        cleared = cookie_attributes(logout, refresh_name)
        # A browser deletes a prefixed cookie only when told so with its own attributes.
        assert sorted(cookie["path"] for cookie in cleared) == PATHS[prefix]
        assert all(cookie["max-age"] == "0" and cookie["secure"] for cookie in cleared)
        assert cookie_attributes(logout, csrf_name)[0]["secure"] is True
        assert refresh_name not in client.cookies
        assert csrf_name not in client.cookies


@pytest.mark.parametrize("prefix", ["__Secure-", "__Host-"])
async def test_a_cookie_without_the_prefix_is_not_read(
    prefix: str, users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    # What a sibling subdomain could set (cookie tossing): the unprefixed name, a token it holds.
    app, _ = cookie_app(users, password_storage, cookie_prefix=prefix)
    async with https_client(app) as client:
        session = await login(client)
        token = cookie_attributes(session, prefix + "refresh_token")[0]["value"]
        client.cookies.clear()
        client.cookies.set("refresh_token", token, domain="testserver", path="/auth/refresh")
        headers = {"X-CSRF-Token": session.json()["csrfToken"]}
        tossed = await client.post("/auth/refresh", headers=headers)
        assert tossed.status_code == 401
        assert tossed.headers["www-authenticate"] == "Bearer"  # no token seen, none refused
        # The token itself was good: sent where it is read, it refreshes.
        client.cookies.clear()
        sent = await client.post("/auth/refresh", json={"refreshToken": token})
        assert sent.status_code == 200, sent.text


@pytest.mark.parametrize("prefix", ["__Secure-", "__Host-"])
async def test_a_prefix_without_secure_cookies_is_refused_at_startup(
    prefix: str,
    users: InMemoryUsers,
    password_storage: PasswordStorageService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = f"AUTH_REFRESH_COOKIE_PREFIX={prefix} needs AUTH_REFRESH_COOKIE_SECURE"
    settings: dict[str, Any] = {"cookie_transport": True, "cookie_prefix": prefix}
    with pytest.raises(ConfigurationError, match=message):
        AuthRefreshModule.for_root(
            user_lookup_service=users, settings={**settings, "cookie_secure": False}
        )
    monkeypatch.setenv("AUTH_REFRESH_COOKIE_TRANSPORT", "true")
    monkeypatch.setenv("AUTH_REFRESH_COOKIE_PREFIX", prefix)
    monkeypatch.setenv("AUTH_REFRESH_COOKIE_SECURE", "false")
    app, _ = rotating_app(users, password_storage)
    with pytest.raises(ConfigurationError, match=message):
        async with https_client(app):
            pass


@pytest.mark.parametrize("prefix", ["__host-", "host", "__Secure", "__Other-"])
def test_only_the_browser_s_prefixes_are_accepted(prefix: str, users: InMemoryUsers) -> None:
    with pytest.raises(ConfigurationError, match="cookie_prefix"):
        AuthRefreshModule.for_root(
            user_lookup_service=users, settings={"cookie_transport": True, "cookie_prefix": prefix}
        )
