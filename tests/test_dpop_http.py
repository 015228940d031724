"""DPoP over HTTP (RFC 9449): login, refresh, logout and the access guard of a registration with
``dpop`` on, sent proofs by panva's ``dpop`` client under Node; each misuse of a bound token."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from auth_refresh import AuthenticationModule
from auth_refresh._utils import base64url_decode
from conftest import InMemoryUsers, serve
from dpop_client import DpopNode, NodeKey, dpop_node
from rotation_app import rotating_app

__all__ = ["dpop_node"]

pytestmark = pytest.mark.anyio

BASE = "http://testserver"
CREDENTIALS = {"username": "user@example.com", "password": "password"}


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = json.loads(base64url_decode(token.split(".")[1]))
    return claims


class Client:
    """An HTTP client that signs proofs with the Node client's keys."""

    def __init__(self, http: httpx.AsyncClient, node: DpopNode) -> None:
        self.http = http
        self.node = node

    def proof(
        self, key: NodeKey, method: str, path: str, *, token: str | None = None, **options: Any
    ) -> dict[str, str]:
        return {"DPoP": self.node.proof(key, method, BASE + path, access_token=token, **options)}

    async def login(self, key: NodeKey | None, **options: Any) -> httpx.Response:
        headers = self.proof(key, "POST", "/auth/login", **options) if key else {}
        return await self.http.post("/auth/login", json=CREDENTIALS, headers=headers)

    async def refresh(
        self, token: str, key: NodeKey | None, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        if headers is None:
            headers = self.proof(key, "POST", "/auth/refresh") if key else {}
        return await self.http.post("/auth/refresh", json={"refreshToken": token}, headers=headers)

    async def me(self, token: str, key: NodeKey | None, scheme: str = "DPoP") -> httpx.Response:
        headers = {"Authorization": f"{scheme} {token}"}
        if key is not None:
            headers |= self.proof(key, "GET", "/me", token=token)
        return await self.http.get("/me", headers=headers)


@asynccontextmanager
async def dpop_app(
    users: InMemoryUsers, password_storage: Any, node: DpopNode, **settings: Any
) -> AsyncIterator[Client]:
    app, _ = rotating_app(users, password_storage, settings={"store_url": "memory://", **settings})
    async with serve(app, base_url=BASE) as http:
        yield Client(http, node)


def error_of(response: httpx.Response) -> str:
    assert response.status_code == 401, response.text
    return str(response.json()["errorCode"])


async def test_a_login_with_a_proof_binds_the_pair_to_its_key(
    users: InMemoryUsers, password_storage: Any, dpop_node: DpopNode
) -> None:
    key = dpop_node.key()
    async with dpop_app(users, password_storage, dpop_node, dpop="optional") as client:
        login = await client.login(key)
        assert login.status_code == 200, login.text
        pair = login.json()
        assert pair["tokenType"] == "DPoP"
        for token in (pair["accessToken"], pair["refreshToken"]):
            assert claims_of(token)["cnf"] == {"jkt": key.jkt}
        refreshed = await client.refresh(pair["refreshToken"], key)
        assert refreshed.status_code == 200, refreshed.text
        successor = refreshed.json()
        assert successor["tokenType"] == "DPoP"
        assert claims_of(successor["refreshToken"])["cnf"] == {"jkt": key.jkt}
        assert claims_of(successor["accessToken"])["cnf"] == {"jkt": key.jkt}
        assert (await client.me(successor["accessToken"], key)).json() == {"id": "user-1"}


async def test_without_a_proof_optional_issues_bearer_tokens(
    users: InMemoryUsers, password_storage: Any, dpop_node: DpopNode
) -> None:
    async with dpop_app(users, password_storage, dpop_node, dpop="optional") as client:
        pair = (await client.login(None)).json()
        assert "tokenType" not in pair
        assert "cnf" not in claims_of(pair["accessToken"])
        assert (await client.me(pair["accessToken"], None, "Bearer")).status_code == 200
        assert (await client.refresh(pair["refreshToken"], None)).status_code == 200


async def test_another_key_cannot_spend_a_bound_refresh_token(
    users: InMemoryUsers, password_storage: Any, dpop_node: DpopNode
) -> None:
    key, thief = dpop_node.key(), dpop_node.key()
    # No grace window: a repeat of the used token is reuse at once.
    settings = {"dpop": "optional", "grace_seconds": 0}
    async with dpop_app(users, password_storage, dpop_node, **settings) as client:
        pair = (await client.login(key)).json()
        stolen = pair["refreshToken"]
        answer = await client.refresh(stolen, thief)
        assert error_of(answer) == "AUTH_REFRESH_DPOP_BINDING_ERROR"
        assert answer.headers["WWW-Authenticate"].startswith('DPoP error="invalid_token", algs="')
        assert error_of(await client.refresh(stolen, None)) == "AUTH_REFRESH_DPOP_BINDING_ERROR"
        # The session did not end: the client's own key still refreshes it.
        refreshed = await client.refresh(stolen, key)
        assert refreshed.status_code == 200, refreshed.text
        # A replay of the used token, with the right key, is reuse: the family is revoked.
        assert error_of(await client.refresh(stolen, key)) == "AUTH_REFRESH_NOT_AUTHORIZED_ERROR"
        revoked = await client.refresh(refreshed.json()["refreshToken"], key)
        assert error_of(revoked) == "AUTH_REFRESH_NOT_AUTHORIZED_ERROR"


async def test_a_replayed_proof_is_refused_and_the_session_goes_on(
    users: InMemoryUsers, password_storage: Any, dpop_node: DpopNode
) -> None:
    key = dpop_node.key()
    async with dpop_app(users, password_storage, dpop_node, dpop="required") as client:
        pair = (await client.login(key)).json()
        proof = client.proof(key, "POST", "/auth/refresh")
        first = await client.refresh(pair["refreshToken"], key, proof)
        assert first.status_code == 200
        successor = first.json()["refreshToken"]
        answer = await client.refresh(successor, key, proof)
        assert error_of(answer) == "AUTH_REFRESH_INVALID_DPOP_PROOF_ERROR"
        assert answer.headers["WWW-Authenticate"].startswith('DPoP error="invalid_dpop_proof"')
        assert (await client.refresh(successor, key)).status_code == 200


async def test_a_proof_for_another_method_or_url_is_refused(
    users: InMemoryUsers, password_storage: Any, dpop_node: DpopNode
) -> None:
    key = dpop_node.key()
    async with dpop_app(users, password_storage, dpop_node, dpop="required") as client:
        token = (await client.login(key)).json()["refreshToken"]
        for method, path in (("GET", "/auth/refresh"), ("POST", "/auth/login")):
            answer = await client.refresh(token, key, client.proof(key, method, path))
            assert error_of(answer) == "AUTH_REFRESH_INVALID_DPOP_PROOF_ERROR"
        elsewhere = {"DPoP": dpop_node.proof(key, "POST", "https://testserver/auth/refresh")}
        assert error_of(await client.refresh(token, key, elsewhere)) == (
            "AUTH_REFRESH_INVALID_DPOP_PROOF_ERROR"
        )
        two = [("DPoP", client.proof(key, "POST", "/auth/refresh")["DPoP"])] * 2
        answer = await client.http.post("/auth/refresh", json={"refreshToken": token}, headers=two)
        assert error_of(answer) == "AUTH_REFRESH_INVALID_DPOP_PROOF_ERROR"
        assert (await client.refresh(token, key)).status_code == 200


async def test_required_refuses_requests_without_a_proof(
    users: InMemoryUsers, password_storage: Any, dpop_node: DpopNode
) -> None:
    key = dpop_node.key()
    async with dpop_app(users, password_storage, dpop_node, dpop="required") as client:
        answer = await client.login(None)
        assert error_of(answer) == "AUTH_REFRESH_INVALID_DPOP_PROOF_ERROR"
        assert answer.headers["WWW-Authenticate"] == ('DPoP algs="ES256 EdDSA Ed25519 RS256 PS256"')
        pair = (await client.login(key)).json()
        assert error_of(await client.refresh(pair["refreshToken"], None)) in {
            "AUTH_REFRESH_DPOP_BINDING_ERROR",
            "AUTH_REFRESH_INVALID_DPOP_PROOF_ERROR",
        }
        # An unbound access token (signed elsewhere with the same keys) is refused too.
        bearer = AuthenticationModule.for_root().issue_token_service.access_token({"sub": "user-1"})
        assert error_of(await client.me(bearer, None, "Bearer")) == (
            "AUTH_REFRESH_INVALID_DPOP_PROOF_ERROR"
        )


async def test_the_guard_takes_a_bound_token_only_with_the_dpop_scheme_and_its_proof(
    users: InMemoryUsers, password_storage: Any, dpop_node: DpopNode
) -> None:
    key, other = dpop_node.key(), dpop_node.key()
    async with dpop_app(users, password_storage, dpop_node, dpop="optional") as client:
        access = (await client.login(key)).json()["accessToken"]
        assert (await client.me(access, key)).status_code == 200
        bearer = await client.me(access, None, "Bearer")
        assert error_of(bearer) == "AUTH_REFRESH_DPOP_BINDING_ERROR"
        assert bearer.headers["WWW-Authenticate"].startswith('DPoP error="invalid_token"')
        assert error_of(await client.me(access, None)) == "AUTH_REFRESH_INVALID_DPOP_PROOF_ERROR"
        assert error_of(await client.me(access, other)) == "AUTH_REFRESH_DPOP_BINDING_ERROR"
        # A proof made for another access token (ath).
        wrong_ath = client.proof(key, "GET", "/me", token=access + "x")
        answer = await client.http.get(
            "/me", headers={"Authorization": f"DPoP {access}", **wrong_ath}
        )
        assert error_of(answer) == "AUTH_REFRESH_INVALID_DPOP_PROOF_ERROR"
        # An unbound token cannot claim the DPoP scheme.
        unbound = (await client.login(None)).json()["accessToken"]
        assert error_of(await client.me(unbound, key)) == "AUTH_REFRESH_DPOP_BINDING_ERROR"


async def test_logout_of_a_bound_session_needs_a_proof_of_its_key(
    users: InMemoryUsers, password_storage: Any, dpop_node: DpopNode
) -> None:
    key, thief = dpop_node.key(), dpop_node.key()
    async with dpop_app(users, password_storage, dpop_node, dpop="optional") as client:
        token = (await client.login(key)).json()["refreshToken"]
        body = {"refreshToken": token}
        for headers in ({}, client.proof(thief, "POST", "/auth/logout")):
            answer = await client.http.post("/auth/logout", json=body, headers=headers)
            assert error_of(answer) == "AUTH_REFRESH_DPOP_BINDING_ERROR"
        own = client.proof(key, "POST", "/auth/logout")
        assert (await client.http.post("/auth/logout", json=body, headers=own)).status_code == 204
        assert (await client.refresh(token, key)).status_code == 401


async def test_nonces_are_asked_for_with_a_header_and_then_accepted(
    users: InMemoryUsers, password_storage: Any, dpop_node: DpopNode
) -> None:
    key = dpop_node.key()
    settings = {"dpop": "required", "dpop_nonce": True}
    async with dpop_app(users, password_storage, dpop_node, **settings) as client:
        answer = await client.login(key)
        assert error_of(answer) == "AUTH_REFRESH_DPOP_NONCE_ERROR"
        assert answer.headers["WWW-Authenticate"].startswith('DPoP error="use_dpop_nonce"')
        nonce = answer.headers["DPoP-Nonce"]
        login = await client.login(key, nonce=nonce)
        assert login.status_code == 200, login.text
        pair = login.json()
        headers = client.proof(key, "POST", "/auth/refresh", nonce=nonce)
        assert (await client.refresh(pair["refreshToken"], key, headers)).status_code == 200
        made_up = client.proof(
            key, "POST", "/auth/refresh", nonce="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        )
        answer = await client.refresh(pair["refreshToken"], key, made_up)
        assert error_of(answer) == "AUTH_REFRESH_DPOP_NONCE_ERROR"


@pytest.mark.parametrize("trusted", [True, False])
async def test_behind_a_trusted_proxy_htu_is_the_url_the_client_saw(
    users: InMemoryUsers, password_storage: Any, dpop_node: DpopNode, trusted: bool
) -> None:
    key = dpop_node.key()
    # httpx's ASGI transport is the peer 127.0.0.1.
    proxies = ["127.0.0.1/32"] if trusted else []
    settings = {"dpop": "required", "trusted_proxies": proxies}
    async with dpop_app(users, password_storage, dpop_node, **settings) as client:
        headers = {
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "auth.example",
            "DPoP": dpop_node.proof(key, "POST", "https://auth.example/auth/login"),
        }
        answer = await client.http.post("/auth/login", json=CREDENTIALS, headers=headers)
        assert answer.status_code == (200 if trusted else 401), answer.text


async def test_with_dpop_off_a_bound_token_is_refused(
    users: InMemoryUsers, password_storage: Any, dpop_node: DpopNode
) -> None:
    issuer = AuthenticationModule.for_root().issue_token_service
    bound = issuer.access_token({"sub": "user-1", "cnf": {"jkt": "x" * 43}})
    async with dpop_app(users, password_storage, dpop_node) as client:
        answer = await client.me(bound, None, "Bearer")
        assert error_of(answer) == "AUTH_REFRESH_DPOP_BINDING_ERROR"
        # And a proof is no business of a registration with DPoP off: a plain login.
        pair = (await client.login(dpop_node.key())).json()
        assert "tokenType" not in pair
        assert "cnf" not in claims_of(pair["refreshToken"])


@pytest.mark.parametrize("mode", ["optional", "required"])
async def test_the_guards_own_refusals_challenge_with_the_dpop_scheme(
    users: InMemoryUsers, password_storage: Any, dpop_node: DpopNode, mode: str
) -> None:
    # RFC 9449 §7.1 and §7.2: the DPoP challenge names the algorithms; beside Bearer's only
    # where Bearer tokens are still accepted.
    algs = 'algs="ES256 EdDSA Ed25519 RS256 PS256"'
    bearer = mode == "optional"
    async with dpop_app(users, password_storage, dpop_node, dpop=mode) as client:
        no_token = await client.http.get("/me")
        assert error_of(no_token) == "AUTH_JWT_NOT_AUTHORIZED_ERROR"
        challenge = f"DPoP {algs}"
        assert no_token.headers["WWW-Authenticate"] == (
            f"Bearer, {challenge}" if bearer else challenge
        )
        refused = f'DPoP error="invalid_token", {algs}'
        if bearer:
            refused = f'Bearer error="invalid_token", {refused}'
        for scheme in ("Bearer", "DPoP"):
            bad = await client.http.get("/me", headers={"Authorization": f"{scheme} not.a.token"})
            assert error_of(bad) == "AUTH_JWT_NOT_AUTHORIZED_ERROR"
            assert bad.headers["WWW-Authenticate"] == refused
