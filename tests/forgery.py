"""What the attack tests share: a token forger, PEM keys, the app under attack and its checks.

The forger builds compact JWS tokens byte by byte, so a test can send exactly the header,
payload and signature an attacker would, including ones no JWT library would produce.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from fastapi import Depends, FastAPI
from jwt.algorithms import get_default_algorithms

from auth_refresh import AuthJwtGuard, AuthJwtModule, AuthRefreshModule

SECURITY_LOGGER = "auth_refresh.security"
INVALID_TOKEN_CHALLENGE = 'Bearer error="invalid_token"'
ALGORITHMS = get_default_algorithms()
HMAC_HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
MEDIA_TYPES = {"access": "at+jwt", "refresh": "rt+jwt"}
DROP = object()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: dict[str, Any] | str | bytes) -> str:
    """A dict as compact JSON, a str as JSON text written by hand, bytes as they are."""
    if isinstance(value, dict):
        value = json.dumps(value, separators=(",", ":"))
    if isinstance(value, str):
        value = value.encode()
    return b64(value)


def forge(
    header: dict[str, Any] | str | bytes,
    payload: dict[str, Any] | str | bytes,
    *,
    key: Any = None,
    algorithm: str | None = None,
    signature: bytes | None = None,
) -> str:
    """A compact JWS. With ``key``: signed by ``algorithm`` (HMAC keys are raw bytes, so a PEM
    public key can be used as a secret, as in the algorithm-confusion attack)."""
    signing_input = f"{segment(header)}.{segment(payload)}"
    if signature is None:
        if key is None:
            signature = b""
        elif algorithm in HMAC_HASHES:
            signature = hmac.new(key, signing_input.encode(), HMAC_HASHES[algorithm]).digest()
        else:
            assert algorithm is not None
            signature = ALGORITHMS[algorithm].sign(signing_input.encode(), key)
    return f"{signing_input}.{b64(signature)}"


def claims(**changes: Any) -> dict[str, Any]:
    """Valid claims for user-1, with ``changes`` applied (``DROP`` removes a claim)."""
    now = int(time.time())
    values: dict[str, Any] = {
        "sub": "user-1",
        "iat": now,
        "exp": now + 600,
        "jti": secrets.token_urlsafe(16),
    }
    for name, value in changes.items():
        if value is DROP:
            values.pop(name, None)
        else:
            values[name] = value
    return values


def header(token_type: str, **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"alg": "HS256", "typ": MEDIA_TYPES[token_type]}
    for name, value in changes.items():
        if value is DROP:
            values.pop(name, None)
        else:
            values[name] = value
    return values


# -- keys -------------------------------------------------------------------------------------


def private_pem(key: Any) -> bytes:
    pem: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem


def public_pem(key: Any) -> bytes:
    pem: bytes = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem


def new_private_key(algorithm: str) -> Any:
    if algorithm in ("RS256", "PS256"):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(algorithm)


# RSA key generation is slow: one per test session is enough.
_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def rsa_key() -> rsa.RSAPrivateKey:
    return _RSA_KEY


def write_pem(directory: Path, name: str, pem: bytes) -> Path:
    path = directory / name
    path.write_bytes(pem)
    return path


# -- the application under attack -------------------------------------------------------------


def build_app(users: Any) -> tuple[FastAPI, AuthRefreshModule]:
    """The refresh route and an access-token route (``GET /me``), both from ``JWT_MODULE_*``."""
    app = FastAPI()
    refresh = AuthRefreshModule.for_root(user_lookup_service=users)
    refresh.attach(app)
    access = AuthJwtModule.for_root(user_lookup_service=users)
    access.attach(app)

    @app.get("/me", operation_id="me")
    async def me(user: Annotated[Any, Depends(AuthJwtGuard())]) -> dict[str, str]:
        return {"id": user.id}

    return app, refresh


@dataclass(frozen=True)
class Target:
    """Where a token of one type is accepted, and how it is sent there."""

    token_type: str
    error_code: str
    send: Callable[[httpx.AsyncClient, str], Awaitable[httpx.Response]]

    def __str__(self) -> str:
        return self.token_type


async def _send_refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/auth/refresh", json={"refreshToken": token})


async def _send_access(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get("/me", headers={"Authorization": f"Bearer {token}"})


REFRESH = Target("refresh", "AUTH_REFRESH_NOT_AUTHORIZED_ERROR", _send_refresh)
ACCESS = Target("access", "AUTH_JWT_NOT_AUTHORIZED_ERROR", _send_access)
TARGETS = pytest.mark.parametrize("target", [REFRESH, ACCESS], ids=str)


def assert_refused(response: httpx.Response, target: Target, token: str) -> None:
    """The error contract for a bad token: 401, invalid_token, errorCode, no token anywhere."""
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == INVALID_TOKEN_CHALLENGE
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["statusCode"] == 401
    assert body["errorCode"] == target.error_code
    assert set(body) == {"statusCode", "errorCode", "message", "timestamp"}
    assert_no_token(response, token)


def assert_no_token(response: httpx.Response, token: str, *, said_anyway: str = "") -> None:
    """No token in the answer, and nothing of the one sent. ``said_anyway`` is the answer to
    the same request with another token: what it says too (a field name, a message) is the
    server's own words, not an echo."""
    assert "accessToken" not in response.text
    assert "refreshToken" not in response.text
    for sent in (token, *token.split(".")):
        if len(sent) >= 8 and sent not in said_anyway:
            assert sent not in response.text


def refusal_reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.reason  # type: ignore[attr-defined]
        for record in caplog.records
        if record.name == SECURITY_LOGGER and hasattr(record, "reason")
    ]


async def attack(
    client: httpx.AsyncClient,
    target: Target,
    token: str,
    caplog: pytest.LogCaptureFixture,
    reason: str,
) -> None:
    """Send ``token``; it must be refused by the verifier for ``reason``, and nothing else."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=SECURITY_LOGGER):
        response = await target.send(client, token)
    assert_refused(response, target, token)
    assert refusal_reasons(caplog) == [reason]
