"""Cookie transport against cross-origin forms and forged CSRF tokens.

Login, refresh and logout check ``Origin`` (``Referer`` without it) even when the browser sends
no ``Sec-Fetch-Site``; the CSRF token is an HMAC under a key derived from the refresh signing
key, so knowing a session's family id is not enough, and it rotates with the keys.
"""

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fastapi import FastAPI

from auth_refresh import (
    AuthenticationModule,
    AuthRefreshModule,
    ConfigurationError,
    PasswordStorageService,
)
from auth_refresh._utils import base64url
from conftest import REFRESH_SECRET, InMemoryUsers, serve
from rotation_app import claims_of, rotating_app

pytestmark = pytest.mark.anyio

CREDENTIALS = {"username": "user@example.com", "password": "password"}
APP_ORIGIN = "https://app.example.com"


def cookie_app(
    users: InMemoryUsers, storage: PasswordStorageService, **settings: Any
) -> tuple[FastAPI, AuthRefreshModule]:
    return rotating_app(
        users,
        storage,
        settings={"cookie_transport": True, "cookie_body_refresh_token": True, **settings},
    )


def client_of(app: FastAPI, **options: Any) -> Any:
    return serve(app, base_url=APP_ORIGIN, **options)


async def session(client: httpx.AsyncClient) -> dict[str, str]:
    response = await client.post("/auth/login", json=CREDENTIALS)
    assert response.status_code == 200, response.text
    body: dict[str, str] = response.json()
    return body


FOREIGN = [
    {"Origin": "https://evil.example"},
    {"Origin": "null"},
    {"Origin": "https://evil.example.com"},  # a sibling subdomain: same site, other origin
    {"Origin": "http://app.example.com"},  # the same host over plain http
    {"Origin": "https://app.example.com:8443"},
    {"Origin": "https://app.example.com.evil.example"},
    {"Origin": "not a url"},
    {"Referer": "https://evil.example/login.html"},
    {"Referer": "https://evil.example.com/"},
]


@pytest.mark.parametrize("headers", FOREIGN, ids=lambda h: ": ".join(next(iter(h.items()))))
async def test_a_cross_origin_form_without_sec_fetch_site_is_a_403_on_every_route(
    users: InMemoryUsers, password_storage: PasswordStorageService, headers: dict[str, str]
) -> None:
    """Issue 11's attack: a form post from another origin, and no Sec-Fetch-Site header
    (older browsers, some proxies), at login, refresh and logout."""
    app, _ = cookie_app(users, password_storage)
    async with client_of(app) as client:
        own = await session(client)
        client.cookies.clear()
        answers = {
            "login": await client.post("/auth/login", data=CREDENTIALS, headers=headers),
            "refresh": await client.post(
                "/auth/refresh", data={"refreshToken": own["refreshToken"]}, headers=headers
            ),
            "logout": await client.post(
                "/auth/logout", data={"refreshToken": own["refreshToken"]}, headers=headers
            ),
        }
        for route, response in answers.items():
            assert response.status_code == 403, (route, response.text)
            assert response.json()["errorCode"] == "AUTH_REFRESH_CSRF_ERROR"
            assert response.json()["message"] == "Requests from other origins are refused"
            assert "set-cookie" not in response.headers, route
        # Nothing was consumed or revoked: the token still refreshes from the right origin.
        accepted = await client.post(
            "/auth/refresh",
            data={"refreshToken": own["refreshToken"]},
            headers={"Origin": APP_ORIGIN},
        )
        assert accepted.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": APP_ORIGIN},
        {"Origin": "https://APP.example.com:443"},
        {"Referer": f"{APP_ORIGIN}/login?next=/"},
        {},  # no Origin and no Referer: not a browser's cross-origin post
    ],
    ids=["origin", "origin-spelled-otherwise", "referer", "missing"],
)
async def test_the_application_s_own_origin_and_clients_without_one_are_answered(
    users: InMemoryUsers, password_storage: PasswordStorageService, headers: dict[str, str]
) -> None:
    app, _ = cookie_app(users, password_storage)
    async with client_of(app) as client:
        login = await client.post("/auth/login", data=CREDENTIALS, headers=headers)
        assert login.status_code == 200, login.text
        assert "set-cookie" in login.headers
        csrf = {"X-CSRF-Token": login.json()["csrfToken"]}
        refreshed = await client.post("/auth/refresh", headers={**headers, **csrf})
        assert refreshed.status_code == 200, refreshed.text
        logout = await client.post("/auth/logout", headers={**headers, **csrf})
        assert logout.status_code == 204


async def test_allowed_origins_replace_the_request_s_own(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = cookie_app(users, password_storage, allowed_origins=["https://spa.example.com/"])
    async with client_of(app) as client:
        spa = await client.post(
            "/auth/login", data=CREDENTIALS, headers={"Origin": "https://spa.example.com"}
        )
        own = await client.post("/auth/login", data=CREDENTIALS, headers={"Origin": APP_ORIGIN})
    assert spa.status_code == 200
    assert own.status_code == 403


async def test_with_same_site_none_only_the_allowed_origins_may_call(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = cookie_app(
        users,
        password_storage,
        cookie_same_site="none",
        allowed_origins=["https://partner.example"],
    )
    cross_site = {"Sec-Fetch-Site": "cross-site"}
    async with client_of(app) as client:
        partner = await client.post(
            "/auth/login",
            json=CREDENTIALS,
            headers={**cross_site, "Origin": "https://partner.example"},
        )
        other = await client.post(
            "/auth/login",
            json=CREDENTIALS,
            headers={**cross_site, "Origin": "https://evil.example"},
        )
    assert partner.status_code == 200
    assert other.status_code == 403


@pytest.mark.parametrize(
    "origins", [["https://app.example.com/login"], ["app.example.com"], ["null"], ["ftp://a.b"]]
)
def test_allowed_origins_are_origins(users: InMemoryUsers, origins: list[str]) -> None:
    # Given in code: the error names the field as written.
    with pytest.raises(ConfigurationError, match="allowed_origins: each entry is an origin"):
        AuthRefreshModule.for_root(user_lookup_service=users, settings={"allowed_origins": origins})


# -- the CSRF token is keyed ---------------------------------------------------------------------


def keyed_csrf(secret: bytes, family: str) -> str:
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"auth-refresh csrf key v1"
    ).derive(secret)
    return base64url(
        hmac.new(key, b"auth-refresh csrf v2\x00" + family.encode(), "sha256").digest()
    )


async def test_knowing_the_family_id_is_not_enough_to_make_the_csrf_token(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = cookie_app(users, password_storage)
    async with client_of(app) as client:
        own = await session(client)
        family = claims_of(own["refreshToken"])["fam"]
        # The server's token: an HMAC under a key derived from the refresh signing secret.
        assert own["csrfToken"] == keyed_csrf(REFRESH_SECRET.encode(), family)
        # What an attacker who learnt the family id (a log line, a support ticket) can make.
        unkeyed = hashlib.sha256(b"auth-refresh csrf v1\x00" + family.encode()).digest()
        guesses = [
            base64url(unkeyed),
            base64url(hashlib.sha256(b"auth-refresh csrf v2\x00" + family.encode()).digest()),
            keyed_csrf(b"another-secret-0123456789abcdef-0123", family),
        ]
        for guess in guesses:
            refused = await client.post("/auth/refresh", headers={"X-CSRF-Token": guess})
            assert refused.status_code == 403
            assert refused.json()["errorCode"] == "AUTH_REFRESH_CSRF_ERROR"
        accepted = await client.post("/auth/refresh", headers={"X-CSRF-Token": own["csrfToken"]})
        assert accepted.status_code == 200


async def test_a_csrf_secret_setting_keys_the_token_instead(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    secret = "csrf-secret-for-tests-0123456789abcdef"
    app, _ = cookie_app(users, password_storage, csrf_secret=secret)
    async with client_of(app) as client:
        own = await session(client)
    family = claims_of(own["refreshToken"])["fam"]
    assert own["csrfToken"] == keyed_csrf(secret.encode(), family)
    assert own["csrfToken"] != keyed_csrf(REFRESH_SECRET.encode(), family)


async def test_the_csrf_token_rotates_with_the_refresh_keys(
    users: InMemoryUsers,
    password_storage: PasswordStorageService,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # Three deployments over one store: the secret alone; a new key signing with the old
    # secret still in the ring; the new key alone.
    store = {"store_url": f"sqlite:///{tmp_path / 'families.db'}"}
    new_key = [{"kid": "2026", "algorithm": "HS256", "secret": "n" * 32}]
    app, _ = cookie_app(users, password_storage, **store)
    async with client_of(app) as client:
        first = await session(client)
        cookies = httpx.Cookies(client.cookies)
    monkeypatch.setenv("JWT_MODULE_REFRESH_KEYS", json.dumps(new_key))
    app, _ = cookie_app(users, password_storage, **store)
    async with client_of(app, cookies=cookies) as client:
        # The old key still verifies the cookie and the CSRF token made under it.
        moved = await client.post("/auth/refresh", headers={"X-CSRF-Token": first["csrfToken"]})
        assert moved.status_code == 200, moved.text
        second = moved.json()
        family = claims_of(second["refreshToken"])["fam"]
        assert second["csrfToken"] == keyed_csrf(b"n" * 32, family) != first["csrfToken"]
        # A tab that still holds the old CSRF token is not locked out by the move.
        other_tab = await client.post("/auth/refresh", headers={"X-CSRF-Token": first["csrfToken"]})
        assert other_tab.status_code == 200
        cookies = httpx.Cookies(client.cookies)
    monkeypatch.delenv("JWT_MODULE_REFRESH_SECRET")
    app, _ = cookie_app(users, password_storage, **store)
    async with client_of(app, cookies=cookies) as client:
        # The old key is gone, and CSRF tokens made under it with it.
        old = await client.post("/auth/refresh", headers={"X-CSRF-Token": first["csrfToken"]})
        assert old.status_code == 403
        new = await client.post("/auth/refresh", headers={"X-CSRF-Token": second["csrfToken"]})
        assert new.status_code == 200, new.text


class DelegatingIssuer:
    """An issue service of the application's own: the default one, behind another class."""

    def __init__(self) -> None:
        self.inner = AuthenticationModule.for_root().issue_token_service

    def access_token(self, payload: Any) -> str:
        return self.inner.access_token(payload)

    def refresh_token(self, payload: Any) -> str:
        return self.inner.refresh_token(payload)

    def response_payload(self, user_id: str) -> Any:
        return self.inner.response_payload(user_id)


async def test_a_custom_issue_service_needs_a_csrf_secret(users: InMemoryUsers) -> None:
    settings = {"cookie_transport": True, "store_url": "memory://"}
    app = FastAPI()
    AuthRefreshModule.for_root(
        user_lookup_service=users, issue_token_service=DelegatingIssuer(), settings=settings
    ).attach(app)
    with pytest.raises(ConfigurationError, match="AUTH_REFRESH_CSRF_SECRET"):
        async with serve(app):
            pass
    app = FastAPI()
    module = AuthRefreshModule.for_root(
        user_lookup_service=users,
        issue_token_service=DelegatingIssuer(),
        settings={**settings, "csrf_secret": "csrf-secret-for-tests-0123456789abcdef"},
    )
    module.attach(app)
    async with client_of(app) as client:
        pair = await module.issue_for_subject("user-1")
        response = await client.post("/auth/refresh", json={"refreshToken": pair["refreshToken"]})
    assert response.status_code == 200, response.text
    family = claims_of(pair["refreshToken"])["fam"]  # the same across rotations
    assert response.json()["csrfToken"] == keyed_csrf(
        b"csrf-secret-for-tests-0123456789abcdef", family
    )
