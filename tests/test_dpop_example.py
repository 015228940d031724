"""The issue's done-when for DPoP (RFC 9449), over real HTTP: the sync example under uvicorn
with ``AUTH_REFRESH_DPOP=required``, sent proofs by panva's ``dpop`` client under Node."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from dpop_client import DpopNode, NodeKey, dpop_node
from servers import running_server
from test_examples import SECRETS

__all__ = ["dpop_node"]

# It starts a process of its own: make quick leaves it out.
pytestmark = pytest.mark.processes

CREDENTIALS = {"username": "user@example.com", "password": "password"}


def test_the_sync_example_with_dpop_required(dpop_node: DpopNode, tmp_path: Path) -> None:
    key, other = dpop_node.key("ES256"), dpop_node.key("Ed25519")
    env = {**SECRETS, "AUTH_REFRESH_DPOP": "required"}
    with (
        running_server(["-m", "examples.sync_registration"], workdir=tmp_path, env=env) as server,
        httpx.Client(base_url=server.base_url) as client,
    ):

        def proof(
            key_: NodeKey, method: str, path: str, token: str | None = None
        ) -> dict[str, str]:
            return {
                "DPoP": dpop_node.proof(key_, method, server.base_url + path, access_token=token)
            }

        def refresh(token: str, headers: dict[str, str]) -> httpx.Response:
            return client.post("/auth/refresh", json={"refreshToken": token}, headers=headers)

        # No proof: 401, before the password is checked.
        assert client.post("/auth/login", json=CREDENTIALS).status_code == 401
        login = client.post(
            "/auth/login", json=CREDENTIALS, headers=proof(key, "POST", "/auth/login")
        )
        assert login.status_code == 200, login.text
        assert login.json()["tokenType"] == "DPoP"
        token = login.json()["refreshToken"]
        # Another key: 401, and the session still refreshes with the right key.
        assert refresh(token, proof(other, "POST", "/auth/refresh")).status_code == 401
        assert refresh(token, {}).status_code == 401
        used = proof(key, "POST", "/auth/refresh")
        refreshed = refresh(token, used)
        assert refreshed.status_code == 200, refreshed.text
        assert refreshed.json()["tokenType"] == "DPoP"
        token, access = refreshed.json()["refreshToken"], refreshed.json()["accessToken"]
        # A replayed proof, a proof for another URL or method: 401.
        assert refresh(token, used).status_code == 401
        assert refresh(token, proof(key, "POST", "/auth/logout")).status_code == 401
        assert refresh(token, proof(key, "GET", "/auth/refresh")).status_code == 401
        assert refresh(token, proof(key, "POST", "/auth/refresh")).status_code == 200
        # The access token: with the DPoP scheme and a proof of it, 200; as Bearer, 401.
        me = client.get(
            "/me", headers={"Authorization": f"DPoP {access}", **proof(key, "GET", "/me", access)}
        )
        assert me.status_code == 200, me.text
        assert me.json()["username"] == "user@example.com"
        bearer = client.get("/me", headers={"Authorization": f"Bearer {access}"})
        assert bearer.status_code == 401
        assert bearer.headers["WWW-Authenticate"].startswith('DPoP error="invalid_token"')
