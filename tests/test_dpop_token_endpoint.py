"""DPoP at the OAuth 2.0 token endpoint (RFC 9449 §5 and §8): grants sent proofs by panva's
``dpop`` client under Node are answered with bound pairs (``token_type`` ``DPoP``); a proof's
refusals are §5.2 errors of their own (``invalid_dpop_proof``, ``use_dpop_nonce``), and a bound
refresh token spent without its key is ``invalid_grant`` that leaves the session alive."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from auth_refresh import PasswordStorageService
from conftest import InMemoryUsers, serve
from dpop_client import DpopNode, NodeKey, dpop_node
from rotation_app import claims_of
from test_token_endpoint import PASSWORD_GRANT, assert_oauth_error, token_app

__all__ = ["dpop_node"]

pytestmark = pytest.mark.anyio

BASE = "http://testserver"
TOKEN_URL = BASE + "/auth/token"


class Grants:
    """Token requests, each with a fresh proof of ``key`` for the token endpoint (or none)."""

    def __init__(self, http: httpx.AsyncClient, node: DpopNode) -> None:
        self.http = http
        self.node = node

    async def password(self, key: NodeKey | None, **options: Any) -> httpx.Response:
        return await self.post(PASSWORD_GRANT, key, **options)

    async def refresh(self, token: str, key: NodeKey | None, **options: Any) -> httpx.Response:
        return await self.post(
            {"grant_type": "refresh_token", "refresh_token": token}, key, **options
        )

    async def post(
        self,
        form: dict[str, str],
        key: NodeKey | None,
        *,
        proof: str | None = None,
        nonce: str | None = None,
    ) -> httpx.Response:
        if proof is None and key is not None:
            proof = self.node.proof(key, "POST", TOKEN_URL, nonce=nonce)
        headers = {} if proof is None else {"DPoP": proof}
        return await self.http.post("/auth/token", data=form, headers=headers)


@asynccontextmanager
async def dpop_grants(
    users: InMemoryUsers, storage: PasswordStorageService, node: DpopNode, **settings: Any
) -> AsyncIterator[Grants]:
    app, _ = token_app(users, storage, settings={"store_url": "memory://", **settings})
    async with serve(app, base_url=BASE) as http:
        yield Grants(http, node)


def bound_answer(response: httpx.Response, key: NodeKey) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["token_type"] == "DPoP"
    for token in (body["access_token"], body["refresh_token"]):
        assert claims_of(token)["cnf"] == {"jkt": key.jkt}
    return body


async def test_the_grants_with_a_proof_answer_a_pair_bound_to_its_key(
    users: InMemoryUsers, password_storage: PasswordStorageService, dpop_node: DpopNode
) -> None:
    key = dpop_node.key()
    async with dpop_grants(users, password_storage, dpop_node, dpop="optional") as grants:
        issued = bound_answer(await grants.password(key), key)
        assert issued["expires_in"] == 3600
        refreshed = bound_answer(await grants.refresh(issued["refresh_token"], key), key)
        # The access token is a DPoP one at the guard: its scheme and a proof with ath.
        access = refreshed["access_token"]
        proof = dpop_node.proof(key, "GET", BASE + "/me", access_token=access)
        me = await grants.http.get(
            "/me", headers={"Authorization": f"DPoP {access}", "DPoP": proof}
        )
        assert me.json() == {"id": "user-1"}
        as_bearer = await grants.http.get("/me", headers={"Authorization": f"Bearer {access}"})
        assert as_bearer.json()["errorCode"] == "AUTH_REFRESH_DPOP_BINDING_ERROR"


async def test_without_a_proof_optional_answers_bearer_tokens(
    users: InMemoryUsers, password_storage: PasswordStorageService, dpop_node: DpopNode
) -> None:
    async with dpop_grants(users, password_storage, dpop_node, dpop="optional") as grants:
        issued = (await grants.password(None)).json()
        assert issued["token_type"] == "Bearer"
        assert "cnf" not in claims_of(issued["refresh_token"])
        refreshed = await grants.refresh(issued["refresh_token"], None)
        assert refreshed.json()["token_type"] == "Bearer"


async def test_another_key_cannot_spend_a_bound_refresh_token_and_the_session_goes_on(
    users: InMemoryUsers, password_storage: PasswordStorageService, dpop_node: DpopNode
) -> None:
    key, thief = dpop_node.key(), dpop_node.key()
    settings = {"dpop": "optional", "grace_seconds": 0}
    async with dpop_grants(users, password_storage, dpop_node, **settings) as grants:
        stolen = bound_answer(await grants.password(key), key)["refresh_token"]
        for attempt in (thief, None):
            assert_oauth_error(await grants.refresh(stolen, attempt), "invalid_grant")
        # Not reuse: the client's own key still refreshes the session.
        successor = bound_answer(await grants.refresh(stolen, key), key)["refresh_token"]
        # A replay of the used token with the right key is reuse: the session ends.
        assert_oauth_error(await grants.refresh(stolen, key), "invalid_grant")
        assert_oauth_error(await grants.refresh(successor, key), "invalid_grant")


async def test_bad_proofs_are_invalid_dpop_proof_and_spend_nothing(
    users: InMemoryUsers, password_storage: PasswordStorageService, dpop_node: DpopNode
) -> None:
    key = dpop_node.key()
    async with dpop_grants(users, password_storage, dpop_node, dpop="required") as grants:
        assert_oauth_error(await grants.password(None), "invalid_dpop_proof")
        proof = dpop_node.proof(key, "POST", TOKEN_URL)
        token = bound_answer(await grants.password(key, proof=proof), key)["refresh_token"]
        refused = [
            proof,  # replayed
            dpop_node.proof(key, "POST", BASE + "/auth/login"),  # another URL
            dpop_node.proof(key, "GET", TOKEN_URL),  # another method
            "not.a.proof",
        ]
        for bad in refused:
            assert_oauth_error(await grants.refresh(token, key, proof=bad), "invalid_dpop_proof")
        assert_oauth_error(await grants.refresh(token, None), "invalid_dpop_proof")
        # None of them spent the token.
        bound_answer(await grants.refresh(token, key), key)


async def test_a_needed_nonce_is_use_dpop_nonce_with_the_nonce_in_a_header(
    users: InMemoryUsers, password_storage: PasswordStorageService, dpop_node: DpopNode
) -> None:
    key = dpop_node.key()
    settings = {"dpop": "required", "dpop_nonce": True}
    async with dpop_grants(users, password_storage, dpop_node, **settings) as grants:
        asked = await grants.password(key)
        assert_oauth_error(asked, "use_dpop_nonce")
        nonce = asked.headers["DPoP-Nonce"]
        issued = bound_answer(await grants.password(key, nonce=nonce), key)
        stale = await grants.refresh(issued["refresh_token"], key, nonce="A" * 32)
        assert_oauth_error(stale, "use_dpop_nonce")
        assert stale.headers["DPoP-Nonce"] == nonce
        bound_answer(await grants.refresh(issued["refresh_token"], key, nonce=nonce), key)
