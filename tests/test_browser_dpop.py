"""The browser session example's DPoP mode (RFC 9449) in real headless Chromium: the page keeps a
non-extractable P-256 key in IndexedDB and signs a proof for every login, refresh, logout and
API call; the key and the session survive a reload. What a thief does with the page's tokens is
sent from the test's own HTTP client, with proofs PyJWT signs under another key.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from conftest import ACCESS_SECRET, REFRESH_SECRET
from servers import running_server
from test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

pytestmark = [
    pytest.mark.processes,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="Chromium is not installed (apt-get install chromium); .ci/run installs it",
    ),
]

READY = "document.body.dataset.ready === 'true'"


@pytest.fixture(params=[False, True], ids=["dpop", "dpop-nonces"])
def example(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, bool]]:
    """The example's URL with ``AUTH_REFRESH_DPOP=required``, and whether nonces are on."""
    environment = {
        "JWT_MODULE_ACCESS_SECRET": ACCESS_SECRET,
        "JWT_MODULE_REFRESH_SECRET": REFRESH_SECRET,
        "AUTH_REFRESH_STORE_URL": f"sqlite:///{tmp_path / 'sessions.db'}",
        "AUTH_REFRESH_DPOP": "required",
        "AUTH_REFRESH_DPOP_NONCE": "true" if request.param else "false",
    }
    with running_server(
        ["-m", "examples.browser_session"], workdir=tmp_path, env=environment
    ) as server:
        yield server.base_url, request.param


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def other_key_proof(
    method: str, url: str, *, access_token: str | None = None, nonce: str | None = None
) -> str:
    """A proof that is right in every way but its key: not the page's."""
    key = ec.generate_private_key(ec.SECP256R1())
    payload: dict[str, Any] = {
        "jti": secrets.token_urlsafe(16),
        "htm": method,
        "htu": url,
        "iat": int(time.time()),
    }
    if access_token is not None:
        digest = hashlib.sha256(access_token.encode()).digest()
        payload["ath"] = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    if nonce is not None:
        payload["nonce"] = nonce
    headers = {"typ": "dpop+jwt", "jwk": ECAlgorithm.to_jwk(key.public_key(), as_dict=True)}
    return jwt.encode(payload, key, algorithm="ES256", headers=headers)


def test_the_browser_session_with_dpop(example: tuple[str, bool]) -> None:
    from playwright.sync_api import sync_playwright

    url, nonces = example
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright, httpx.Client(base_url=url, timeout=10) as thief:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            page = context.new_page()

            def text(selector: str) -> str:
                return page.text_content(selector) or ""

            page.goto(url + "/")
            page.wait_for_function(READY)
            thumbprint = text("#dpop-key")
            assert page.get_attribute("#dpop-key", "data-source") == "new"
            # The private key can sign, never be read out.
            assert page.evaluate("dpop.keyPair.privateKey.extractable") is False
            exported = page.evaluate(
                "crypto.subtle.exportKey('jwk', dpop.keyPair.privateKey)"
                ".then(() => 'exported', (error) => error.name)"
            )
            assert exported == "InvalidAccessError"

            with page.expect_request("**/auth/login") as login:
                page.click("#login button")
            page.wait_for_function("document.getElementById('status').textContent === 'logged in'")
            assert login.value.header_value("dpop")
            assert page.evaluate("tokenType") == "DPoP"
            access = page.evaluate("accessToken")
            assert claims_of(access)["cnf"] == {"jkt": thumbprint}
            page.screenshot(path=ARTIFACTS / "dpop-01-logged-in.png", full_page=True)

            with page.expect_request("**/me") as me:
                page.click("#me")
            page.wait_for_function(
                "document.getElementById('profile').textContent === 'user@example.com'"
            )
            sent = me.value.all_headers()
            assert sent["authorization"] == f"DPoP {access}"
            proof = claims_of(sent["dpop"])
            assert proof["htm"] == "GET"
            assert proof["htu"] == url + "/me"
            # With nonces on, the page signed again with the one the server asked for.
            nonce = page.evaluate("dpopNonce")
            assert ("nonce" in proof) is nonces
            assert (nonce is not None) is nonces

            # The page's request replayed as it was: its proof was used once already.
            replayed = thief.get("/me", headers={k: sent[k] for k in ("authorization", "dpop")})
            assert replayed.status_code == 401
            assert replayed.json()["errorCode"] == "AUTH_REFRESH_INVALID_DPOP_PROOF_ERROR"
            assert 'error="invalid_dpop_proof"' in replayed.headers["WWW-Authenticate"]
            # The access token alone: as Bearer, or as DPoP without a proof or with another key's.
            bearer = thief.get("/me", headers={"Authorization": f"Bearer {access}"})
            assert bearer.status_code == 401
            assert bearer.headers["WWW-Authenticate"].startswith('DPoP error="invalid_token"')
            unproven = thief.get("/me", headers={"Authorization": f"DPoP {access}"})
            assert unproven.status_code == 401
            elsewhere = thief.get(
                "/me",
                headers={
                    "Authorization": f"DPoP {access}",
                    "DPoP": other_key_proof("GET", url + "/me", access_token=access, nonce=nonce),
                },
            )
            assert elsewhere.status_code == 401
            assert elsewhere.json()["errorCode"] == "AUTH_REFRESH_DPOP_BINDING_ERROR"

            # The refresh and CSRF cookies carried off (from the disk, say): without the key,
            # no refresh, and the session is not ended.
            jar = {c["name"]: c["value"] for c in context.cookies()}
            stolen = {
                "Cookie": f"refresh_token={jar['refresh_token']}; csrf_token={jar['csrf_token']}",
                "X-CSRF-Token": jar["csrf_token"],
            }
            assert thief.post("/auth/refresh", headers=stolen).status_code == 401
            other = other_key_proof("POST", url + "/auth/refresh", nonce=nonce)
            refused = thief.post("/auth/refresh", headers={**stolen, "DPoP": other})
            assert refused.status_code == 401
            assert refused.json()["errorCode"] == "AUTH_REFRESH_DPOP_BINDING_ERROR"
            assert "accessToken" not in refused.json()

            # A reload: the access token in memory is gone; the key comes back from IndexedDB,
            # still non-extractable, and refreshes the session with the cookie.
            with page.expect_request("**/auth/refresh") as refreshed:
                page.reload()
            page.wait_for_function(READY)
            assert refreshed.value.header_value("dpop")
            assert page.get_attribute("#dpop-key", "data-source") == "stored"
            assert text("#dpop-key") == thumbprint
            assert page.evaluate("dpop.keyPair.privateKey.extractable") is False
            assert text("#status") == "logged in"
            assert text("#refreshes") == "1"
            renewed = page.evaluate("accessToken")
            assert renewed != access
            assert claims_of(renewed)["cnf"] == {"jkt": thumbprint}
            page.click("#me")
            page.wait_for_function(
                "document.getElementById('profile').textContent === 'user@example.com'"
            )
            # The session routes take the bound token too.
            page.click("#load-sessions")
            page.wait_for_function("document.querySelectorAll('#session-list li').length === 1")
            page.screenshot(path=ARTIFACTS / "dpop-02-after-reload.png", full_page=True)

            with page.expect_request("**/auth/logout") as logout:
                page.click("#logout")
            page.wait_for_function("document.getElementById('status').textContent === 'logged out'")
            assert logout.value.header_value("dpop")
            assert not [c for c in context.cookies() if c["name"] == "refresh_token"]
        finally:
            browser.close()
