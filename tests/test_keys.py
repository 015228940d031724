"""Key rings: every algorithm, keys from files and env, rotation, JWKS, and startup errors."""

from __future__ import annotations

import hmac
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI

from auth_refresh import (
    AuthJwtModule,
    AuthRefreshModule,
    ConfigurationError,
    InvalidTokenError,
    JwtKey,
    JwtModule,
    JwtService,
    JwtSettings,
    KeyRing,
    jwks_router,
)
from auth_refresh.settings import build_settings
from conftest import ACCESS_SECRET, REFRESH_SECRET, InMemoryUsers, serve
from forgery import (
    build_app,
    claims,
    forge,
    header,
    new_private_key,
    private_pem,
    public_pem,
    rsa_key,
    write_pem,
)

pytestmark = pytest.mark.anyio

HMAC_SECRETS = {"HS256": "s" * 32, "HS384": "s" * 48, "HS512": "s" * 64}
ASYMMETRIC = ["RS256", "PS256", "ES256", "EdDSA"]


def key_for(algorithm: str) -> Any:
    return rsa_key() if algorithm in ("RS256", "PS256") else new_private_key(algorithm)


def keys_env(monkeypatch: pytest.MonkeyPatch, token_type: str, keys: list[dict[str, Any]]) -> None:
    monkeypatch.delenv(f"JWT_MODULE_{token_type.upper()}_SECRET", raising=False)
    monkeypatch.setenv(f"JWT_MODULE_{token_type.upper()}_KEYS", json.dumps(keys))


def configuration_error(**settings: Any) -> str:
    with pytest.raises(ConfigurationError) as caught:
        JwtModule.for_root(settings)
    return caught.value.message


# -- every algorithm, every source ---------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512"])
def test_hmac_keys_sign_and_verify(algorithm: str) -> None:
    key = {"kid": "k1", "algorithm": algorithm, "secret": HMAC_SECRETS[algorithm]}
    jwt_service = JwtModule.for_root({"access_keys": [key], "access_secret": None}).service
    token = jwt_service.sign("access", {"sub": "u"})
    assert jwt.get_unverified_header(token) == {"alg": algorithm, "kid": "k1", "typ": "at+jwt"}
    assert jwt_service.verify("access", token)["sub"] == "u"


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512"])
@pytest.mark.parametrize("length", [64, 128, 129, 300])  # around both block sizes
def test_hmac_signatures_are_rfc_2104_and_pyjwt_reads_them(algorithm: str, length: int) -> None:
    secret = bytes(range(256))[:length] if length <= 256 else b"k" * length
    key = JwtKey.from_secret(secret, algorithm)
    digest = {"HS256": "sha256", "HS384": "sha384", "HS512": "sha512"}[algorithm]
    for message in (b"", b"header.payload", b"x" * 5000):
        signature = key.sign(message)
        assert signature == hmac.digest(secret, message, digest)
        assert key.verifies(message, signature)
        assert not key.verifies(message, signature[:-1])
        assert not key.verifies(message, bytes([signature[0] ^ 1]) + signature[1:])
        assert not key.verifies(message + b".", signature)
    keys = [{"kid": "k1", "algorithm": algorithm, "secret": secret.hex()}]
    jwt_service = JwtModule.for_root({"access_keys": keys, "access_secret": None}).service
    token = jwt_service.sign("access", {"sub": "u"})
    assert jwt.decode(token, secret.hex(), algorithms=[algorithm])["sub"] == "u"


@pytest.mark.parametrize("algorithm", ASYMMETRIC)
@pytest.mark.parametrize("source", ["private_key_file", "private_key"])
def test_asymmetric_keys_from_a_pem_file_or_inline_pem(
    algorithm: str, source: str, tmp_path: Path
) -> None:
    pem = private_pem(key_for(algorithm))
    value = (
        str(write_pem(tmp_path, "key.pem", pem)) if source == "private_key_file" else pem.decode()
    )
    key = {"kid": f"{algorithm}-1", "algorithm": algorithm, source: value}
    jwt_service = JwtModule.for_root({"refresh_keys": [key], "refresh_secret": None}).service
    token = jwt_service.sign("refresh", {"sub": "u"})
    assert jwt.get_unverified_header(token)["alg"] == algorithm
    assert jwt_service.verify("refresh", token)["sub"] == "u"


@pytest.mark.parametrize("source", ["public_key_file", "public_key"])
def test_a_public_key_verifies_what_its_private_key_signed(source: str, tmp_path: Path) -> None:
    private_key = new_private_key("ES256")
    signer = JwtModule.for_root(
        {
            "access_keys": [
                {
                    "kid": "es",
                    "algorithm": "ES256",
                    "private_key": private_pem(private_key).decode(),
                }
            ]
        }
    ).service
    pem = public_pem(private_key)
    value = (
        str(write_pem(tmp_path, "pub.pem", pem)) if source == "public_key_file" else pem.decode()
    )
    verifier = JwtModule.for_root(
        {
            "access_keys": [
                {"kid": "hs", "algorithm": "HS256", "secret": "h" * 32},
                {"kid": "es", "algorithm": "ES256", source: value},
            ]
        }
    ).service
    assert verifier.verify("access", signer.sign("access", {"sub": "u"}))["sub"] == "u"


def test_keys_come_from_the_environment_as_json(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write_pem(tmp_path, "ed.pem", private_pem(new_private_key("EdDSA")))
    keys_env(
        monkeypatch,
        "access",
        [{"kid": "ed-1", "algorithm": "EdDSA", "private_key_file": str(path)}],
    )
    keys_env(monkeypatch, "refresh", [{"kid": "hs-1", "algorithm": "HS512", "secret": "r" * 64}])
    monkeypatch.setenv("JWT_MODULE_REFRESH_SIGNING_KID", "hs-1")
    jwt_service = JwtModule.for_root().service
    assert jwt.get_unverified_header(jwt_service.sign("access", {"sub": "u"}))["kid"] == "ed-1"
    assert jwt.get_unverified_header(jwt_service.sign("refresh", {"sub": "u"}))["kid"] == "hs-1"
    assert jwt_service.settings.refresh_signing_kid == "hs-1"


def test_keys_are_parsed_once_at_startup(tmp_path: Path) -> None:
    path = write_pem(tmp_path, "key.pem", private_pem(new_private_key("ES256")))
    jwt_service = JwtModule.for_root(
        {"access_keys": [{"kid": "es", "algorithm": "ES256", "private_key_file": str(path)}]}
    ).service
    path.unlink()
    # The file is gone: signing and verifying use the key read at startup.
    assert jwt_service.verify("access", jwt_service.sign("access", {"sub": "u"}))["sub"] == "u"


# -- rotation ------------------------------------------------------------------------------------


def test_rotation_the_new_key_signs_and_the_old_one_still_verifies(tmp_path: Path) -> None:
    old_key, new_key = new_private_key("ES256"), new_private_key("ES256")
    old_entry = {"kid": "2024", "algorithm": "ES256", "private_key": private_pem(old_key).decode()}
    before = JwtModule.for_root({"access_keys": [old_entry]}).service
    old_token = before.sign("access", {"sub": "u"})

    new_entry = {"kid": "2025", "algorithm": "ES256", "private_key": private_pem(new_key).decode()}
    old_public = {"kid": "2024", "algorithm": "ES256", "public_key": public_pem(old_key).decode()}
    during = JwtModule.for_root(
        {"access_keys": [old_public, new_entry], "access_signing_kid": "2025"}
    ).service
    new_token = during.sign("access", {"sub": "u"})
    assert jwt.get_unverified_header(new_token)["kid"] == "2025"
    assert during.verify("access", old_token)["sub"] == "u"
    assert during.verify("access", new_token)["sub"] == "u"

    after = JwtModule.for_root({"access_keys": [new_entry]}).service
    assert after.verify("access", new_token)["sub"] == "u"
    with pytest.raises(InvalidTokenError) as caught:
        after.verify("access", old_token)
    assert caught.value.reason == "unknown_key"


def test_without_a_signing_kid_the_first_key_signs() -> None:
    keys = [
        {"kid": "first", "algorithm": "HS256", "secret": "1" * 32},
        {"kid": "second", "algorithm": "HS256", "secret": "2" * 32},
    ]
    jwt_service = JwtModule.for_root({"access_keys": keys}).service
    assert jwt.get_unverified_header(jwt_service.sign("access", {"sub": "u"}))["kid"] == "first"


async def test_moving_from_a_secret_to_keys_logs_nobody_out(
    monkeypatch: pytest.MonkeyPatch, users: InMemoryUsers
) -> None:
    # Before: the simple setup. After: keys sign, the secret still verifies tokens without kid.
    old_token = JwtModule.for_root().service.sign("access", {"sub": "user-1"})
    keys_env(
        monkeypatch,
        "access",
        [
            {
                "kid": "es",
                "algorithm": "ES256",
                "private_key": private_pem(new_private_key("ES256")).decode(),
            }
        ],
    )
    monkeypatch.setenv("JWT_MODULE_ACCESS_SECRET", ACCESS_SECRET)
    app, _ = build_app(users)
    new_token = JwtModule.for_root().service.sign("access", {"sub": "user-1"})
    assert jwt.get_unverified_header(new_token)["kid"] == "es"
    async with serve(app) as client:
        for token in (old_token, new_token):
            response = await client.get("/me", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200
        # An old-style token must still carry the old key's signature.
        forged = forge(header("access"), claims(), key=b"x" * 32, algorithm="HS256")
        response = await client.get("/me", headers={"Authorization": f"Bearer {forged}"})
        assert response.status_code == 401


# -- JWKS ----------------------------------------------------------------------------------------


async def test_jwks_round_trip_publishes_public_keys_only(tmp_path: Path) -> None:
    ec_key, ed_key = new_private_key("ES256"), new_private_key("EdDSA")
    hmac_secret = "an-hmac-secret-that-must-never-be-published-0123456789"
    refresh_key = new_private_key("ES256")
    jwt_service = JwtModule.for_root(
        {
            "access_keys": [
                {"kid": "ec", "algorithm": "ES256", "private_key": private_pem(ec_key).decode()},
                {
                    "kid": "rsa",
                    "algorithm": "RS256",
                    "private_key": private_pem(rsa_key()).decode(),
                },
                {"kid": "ed", "algorithm": "EdDSA", "public_key": public_pem(ed_key).decode()},
                {"kid": "hs", "algorithm": "HS256", "secret": hmac_secret},
            ],
            "refresh_keys": [
                {
                    "kid": "rt",
                    "algorithm": "ES256",
                    "private_key": private_pem(refresh_key).decode(),
                }
            ],
        }
    ).service
    app = FastAPI()
    app.include_router(jwks_router(jwt_service))
    async with serve(app) as client:
        response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/jwk-set+json"
    jwks = response.json()
    assert [key["kid"] for key in jwks["keys"]] == ["ec", "rsa", "ed"]
    assert {key["kty"] for key in jwks["keys"]} == {"EC", "RSA", "OKP"}
    for key in jwks["keys"]:
        assert key["use"] == "sig"
        assert not {"d", "p", "q", "dp", "dq", "qi", "k", "oth"} & set(key)
    assert hmac_secret not in response.text
    assert "rt" not in [key["kid"] for key in jwks["keys"]]

    # A third party verifies our access token with nothing but the published set.
    token = jwt_service.sign("access", {"sub": "user-1"})
    published = jwt.PyJWKSet.from_dict(jwks)
    signing_key = published[jwt.get_unverified_header(token)["kid"]]
    verified = jwt.decode(token, signing_key.key, algorithms=["ES256"])
    assert verified["sub"] == "user-1"
    for kid, algorithm in (("rsa", "RS256"), ("ed", "EdDSA")):
        assert published[kid].algorithm_name == algorithm


async def test_jwks_route_path_can_be_changed_and_is_empty_for_secrets_only() -> None:
    app = FastAPI()
    app.include_router(jwks_router(JwtModule.for_root().service, path="/keys"))
    async with serve(app) as client:
        response = await client.get("/keys")
        missing = await client.get("/.well-known/jwks.json")
    assert response.json() == {"keys": []}
    assert ACCESS_SECRET not in response.text
    assert missing.status_code == 404


# -- startup errors ------------------------------------------------------------------------------


def _pem(algorithm: str) -> str:
    return private_pem(key_for(algorithm)).decode()


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        (
            {"access_secret": None},
            "JWT_MODULE_ACCESS_SECRET is not set (nor JWT_MODULE_ACCESS_KEYS)",
        ),
        ({"refresh_secret": None, "refresh_keys": []}, "JWT_MODULE_REFRESH_SECRET is not set"),
        ({"algorithm": "RS256"}, "JWT_MODULE_ALGORITHM"),
        ({"algorithm": "none"}, "JWT_MODULE_ALGORITHM"),
        ({"access_secret": "short"}, "JWT_MODULE_ACCESS_SECRET must be at least 32"),
        (
            {"algorithm": "HS512"},
            "JWT_MODULE_ACCESS_SECRET must be at least 64 bytes long for HS512",
        ),
        ({"access_signing_kid": "k"}, "JWT_MODULE_ACCESS_SIGNING_KID names 'k', not in"),
        ({"access_keys": "not json"}, "JWT_MODULE_ACCESS_KEYS"),
        (
            {"access_keys": [{"kid": "k", "algorithm": "none", "secret": "s" * 32}]},
            "ACCESS_KEYS.0.ALGORITHM",
        ),
        (
            {"access_keys": [{"kid": "k", "algorithm": "RS512", "secret": "s" * 32}]},
            "ACCESS_KEYS.0.ALGORITHM",
        ),
        (
            {"access_keys": [{"kid": "a kid", "algorithm": "HS256", "secret": "s" * 32}]},
            "ACCESS_KEYS.0.KID",
        ),
        (
            {"access_keys": [{"kid": "", "algorithm": "HS256", "secret": "s" * 32}]},
            "ACCESS_KEYS.0.KID",
        ),
        (
            {"access_keys": [{"kid": "k", "algorithm": "HS256", "secert": "s" * 32}]},
            "ACCESS_KEYS.0.SECERT",
        ),
        ({"access_keys": [{"kid": "k", "algorithm": "HS256"}]}, "give exactly one of"),
        (
            {
                "access_keys": [
                    {"kid": "k", "algorithm": "HS256", "secret": "s" * 32, "public_key": "x"}
                ]
            },
            "give exactly one of",
        ),
        (
            {"access_keys": [{"kid": "k", "algorithm": "HS256", "public_key": "PEM"}]},
            "HS256 is an HMAC algorithm and takes a 'secret'",
        ),
        (
            {"access_keys": [{"kid": "k", "algorithm": "RS256", "secret": "s" * 32}]},
            "RS256 takes a private or public key, not a 'secret'",
        ),
        (
            {"access_keys": [{"kid": "k", "algorithm": "HS512", "secret": "s" * 63}]},
            "JWT_MODULE_ACCESS_KEYS.0 (kid 'k'): a HS512 secret must be at least 64 bytes",
        ),
        (
            {
                "access_keys": [
                    {"kid": "k", "algorithm": "HS256", "secret": "1" * 32},
                    {"kid": "k", "algorithm": "HS256", "secret": "2" * 32},
                ]
            },
            "JWT_MODULE_ACCESS_KEYS names a kid twice: k",
        ),
        (
            {
                "access_keys": [{"kid": "k", "algorithm": "HS256", "secret": "1" * 32}],
                "access_signing_kid": "x",
            },
            "JWT_MODULE_ACCESS_SIGNING_KID names 'x', not in JWT_MODULE_ACCESS_KEYS",
        ),
    ],
)
def test_bad_settings_are_startup_errors_that_name_the_setting(
    settings: dict[str, Any], names: str
) -> None:
    message = configuration_error(**settings)
    assert message.startswith("JwtSettings: ")
    assert names in message


def test_an_hmac_secret_that_is_a_public_key_is_refused() -> None:
    # The configuration side of algorithm confusion: a PEM used as a shared secret.
    public_key = public_pem(rsa_key()).decode()
    message = configuration_error(
        access_keys=[{"kid": "k", "algorithm": "HS256", "secret": public_key}]
    )
    assert "JWT_MODULE_ACCESS_KEYS.0 (kid 'k')" in message
    assert "is a public or private key" in message
    message = configuration_error(access_secret=public_key)
    assert "JWT_MODULE_ACCESS_SECRET" in message
    assert "BEGIN" not in message


def test_one_kid_never_names_a_secret_in_one_ring_and_a_public_key_in_the_other() -> None:
    message = configuration_error(
        access_keys=[{"kid": "shared", "algorithm": "HS256", "secret": "s" * 32}],
        refresh_keys=[{"kid": "shared", "algorithm": "ES256", "private_key": _pem("ES256")}],
    )
    assert "the kid 'shared' names different keys" in message
    assert "JWT_MODULE_ACCESS_KEYS and JWT_MODULE_REFRESH_KEYS" in message
    # The same key under one kid in both rings is fine.
    same = {"kid": "shared", "algorithm": "ES256", "private_key": _pem("ES256")}
    assert JwtModule.for_root({"access_keys": [same], "refresh_keys": [same]})


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (
            {"algorithm": "RS256", "private_key_file": "/nonexistent/key.pem"},
            "cannot read /nonexistent/key.pem",
        ),
        (
            {"algorithm": "ES256", "private_key": "-----BEGIN PRIVATE KEY-----\ngarbage\n"},
            "not a PEM private key",
        ),
        ({"algorithm": "ES256", "public_key": "garbage"}, "not a PEM public key"),
        ({"algorithm": "RS256", "private_key": "EC"}, "RS256 needs an RSA key"),
        ({"algorithm": "ES256", "private_key": "ED"}, "ES256 needs a P-256 key"),
        ({"algorithm": "EdDSA", "private_key": "RSA"}, "EdDSA needs an Ed25519/Ed448 key"),
        (
            {"algorithm": "ES256", "private_key": "P384"},
            "ES256 needs a P-256 key (this one is secp384r1)",
        ),
        (
            {"algorithm": "RS256", "private_key": "RSA1024"},
            "at least 2048 bits (this one has 1024)",
        ),
        (
            {"algorithm": "ES256", "private_key": "ENCRYPTED"},
            "encrypted private keys are not supported",
        ),
        ({"algorithm": "ES256", "public_key": "EC"}, "not a PEM public key"),
    ],
)
def test_bad_key_material_is_a_startup_error_naming_the_key(
    key: dict[str, Any], problem: str
) -> None:
    material = {
        "EC": _pem("ES256"),
        "ED": _pem("EdDSA"),
        "RSA": _pem("RS256"),
        "P384": private_pem(ec.generate_private_key(ec.SECP384R1())).decode(),
        # Deliberately weak: the test is that it is refused.
        "RSA1024": private_pem(rsa.generate_private_key(65537, 1024)).decode(),  # noqa: S505
        "ENCRYPTED": new_private_key("ES256")
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"password"),
        )
        .decode(),
    }
    field = next(name for name in key if name != "algorithm")
    key = {**key, field: material.get(key[field], key[field]), "kid": "k"}
    message = configuration_error(access_keys=[key])
    assert message.startswith("JwtSettings: JWT_MODULE_ACCESS_KEYS.0 (kid 'k'): ")
    assert problem in message
    assert "garbage" not in message


def test_the_signing_key_must_be_able_to_sign() -> None:
    public_only = {
        "kid": "pub",
        "algorithm": "ES256",
        "public_key": public_pem(new_private_key("ES256")).decode(),
    }
    message = configuration_error(access_keys=[public_only])
    assert "JWT_MODULE_ACCESS_SIGNING_KID is not set and the first key" in message
    message = configuration_error(
        access_keys=[{"kid": "hs", "algorithm": "HS256", "secret": "s" * 32}, public_only],
        access_signing_kid="pub",
    )
    assert "JWT_MODULE_ACCESS_SIGNING_KID names 'pub', which has no private key" in message


async def test_a_bad_key_stops_the_application_at_startup(
    monkeypatch: pytest.MonkeyPatch, users: InMemoryUsers
) -> None:
    keys_env(
        monkeypatch,
        "refresh",
        [{"kid": "k", "algorithm": "RS256", "private_key_file": "/nonexistent"}],
    )
    app = FastAPI()
    AuthRefreshModule.for_root(user_lookup_service=users).attach(app)
    with pytest.raises(ConfigurationError, match=r"JWT_MODULE_REFRESH_KEYS\.0"):
        async with serve(app):
            pass
    with pytest.raises(ConfigurationError, match=r"JWT_MODULE_REFRESH_KEYS\.0"):
        AuthJwtModule.for_root(user_lookup_service=users)


# -- JwtKey and KeyRing in code ------------------------------------------------------------------


def test_a_key_refuses_what_its_algorithm_cannot_use() -> None:
    with pytest.raises(ConfigurationError, match="unsupported algorithm 'none'"):
        JwtKey.from_secret("s" * 32, "none")
    with pytest.raises(ConfigurationError, match="HS256 takes a secret"):
        JwtKey("HS256", None, rsa_key().public_key())
    with pytest.raises(ConfigurationError, match="do not match"):
        JwtKey("ES256", new_private_key("ES256"), new_private_key("ES256").public_key())
    with pytest.raises(ConfigurationError, match="can only verify"):
        JwtKey.from_public_pem(public_pem(rsa_key()), "RS256", "pub").sign(b"x")


def test_a_ring_has_one_signing_key_and_unique_kids() -> None:
    first = JwtKey.from_secret("1" * 32, "HS256", "a")
    with pytest.raises(ConfigurationError, match="a kid names one key per ring: a"):
        KeyRing(first, (JwtKey.from_secret("2" * 32, "HS256", "a"),))
    with pytest.raises(ConfigurationError, match="has no private key"):
        KeyRing(JwtKey.from_public_pem(public_pem(rsa_key()), "RS256", "pub"))
    ring = KeyRing(first, (JwtKey.from_secret("2" * 32, "HS256", "b"),))
    assert [key.kid for key in ring.verification] == ["a", "b"]
    assert ring.find("b") is ring.verification[1]
    assert ring.find(None) is None
    assert ring.find(["a"]) is None


def test_the_service_exposes_its_rings() -> None:
    jwt_service = JwtService(build_settings(JwtSettings))
    assert jwt_service.key_ring("access").signing.verification_key == ACCESS_SECRET.encode()
    assert jwt_service.key_ring("refresh").signing.verification_key == REFRESH_SECRET.encode()
