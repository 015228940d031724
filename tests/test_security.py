"""One regression test per attack class, each sending the real forged token over HTTP.

Every attack goes to both the refresh route and an access-token route, and must be refused by
the verifier for the expected reason (read from the ``auth_refresh.security`` log), with the
error contract of RFC 6750 §3.1, and before any user lookup.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from jwt.algorithms import ECAlgorithm
from starlette.requests import Request

from auth_refresh import (
    AuthRefreshModule,
    ChainExtractor,
    ExtractJwt,
    InvalidRequestError,
    JwtModule,
    RequestTooLargeError,
)
from auth_refresh.tokens.jwt import MAX_JSON_DEPTH
from auth_refresh.transport.bodies import read_body_fields
from auth_refresh.transport.cookies import csrf_keys_of, csrf_token_for
from conftest import ACCESS_SECRET, REFRESH_SECRET, InMemoryUsers, serve
from forgery import (
    ACCESS,
    DROP,
    INVALID_TOKEN_CHALLENGE,
    REFRESH,
    SECURITY_LOGGER,
    TARGETS,
    Target,
    assert_no_token,
    attack,
    b64,
    build_app,
    claims,
    forge,
    header,
    new_private_key,
    private_pem,
    public_pem,
    refusal_reasons,
    rsa_key,
    segment,
    write_pem,
)

pytestmark = pytest.mark.anyio

SECRETS = {"access": ACCESS_SECRET.encode(), "refresh": REFRESH_SECRET.encode()}


def signed(
    target: Target, header_changes: dict[str, Any] | None = None, **claim_changes: Any
) -> str:
    """A token for ``target`` signed with the configured secret, header and claims changed."""
    return forge(
        header(target.token_type, **(header_changes or {})),
        claims(**claim_changes),
        key=SECRETS[target.token_type],
        algorithm="HS256",
    )


def signed_raw(target: Target, header_json: str, payload_json: str | bytes) -> str:
    """A token signed with the configured secret whose header and payload are given verbatim."""
    return forge(header_json, payload_json, key=SECRETS[target.token_type], algorithm="HS256")


# -- controls: the same app accepts good tokens, so refusals below are the rules at work --------


@TARGETS
async def test_a_valid_token_is_accepted_and_looks_the_user_up(
    target: Target, users: InMemoryUsers
) -> None:
    app, refresh = build_app(users)
    async with serve(app) as client:
        if target is REFRESH:
            token = (await refresh.issue(users.users["user-1"]))["refreshToken"]
        else:
            token = JwtModule.for_root().service.sign("access", {"sub": "user-1"})
        response = await target.send(client, token)
    assert response.status_code == 200, response.text
    assert users.subject_lookups == ["user-1"]


@TARGETS
async def test_no_token_gets_a_bare_bearer_challenge(target: Target, users: InMemoryUsers) -> None:
    app, _ = build_app(users)
    async with serve(app) as client:
        if target is REFRESH:
            response = await client.post("/auth/refresh", json={})
        else:
            response = await client.get("/me")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["errorCode"] == target.error_code
    assert users.subject_lookups == []


# -- alg none and algorithm swaps (RFC 8725 §2.1, §3.1) ----------------------------------------


@TARGETS
@pytest.mark.parametrize("algorithm", ["none", "None", "NONE", "nOnE", "none ", "", None])
async def test_alg_none_in_any_spelling_is_refused(
    target: Target, algorithm: str | None, users: InMemoryUsers, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = build_app(users)
    unsigned_header = header(target.token_type, alg=algorithm)
    async with serve(app) as client:
        for signature in (b"", b"\x00" * 32):
            token = forge(unsigned_header, claims(), signature=signature)
            await attack(client, target, token, caplog, "algorithm_mismatch")
        # Without any "alg" at all.
        token = forge(header(target.token_type, alg=DROP), claims())
        await attack(client, target, token, caplog, "algorithm_mismatch")
    assert users.subject_lookups == []


@TARGETS
@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
async def test_another_hmac_algorithm_with_the_right_secret_is_refused(
    target: Target, algorithm: str, users: InMemoryUsers, caplog: pytest.LogCaptureFixture
) -> None:
    # The secret is pinned to HS256: a token may not pick HS384/HS512 even with the secret.
    app, _ = build_app(users)
    token = forge(
        header(target.token_type, alg=algorithm),
        claims(),
        key=SECRETS[target.token_type],
        algorithm=algorithm,
    )
    async with serve(app) as client:
        await attack(client, target, token, caplog, "algorithm_mismatch")
    assert users.subject_lookups == []


def use_rsa_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, algorithm: str = "RS256") -> None:
    """Both token types signed by one RSA key, kid "rsa-1"; no HMAC secret at all."""
    path = write_pem(tmp_path, "rsa.pem", _rsa_private_pem())
    keys = json.dumps([{"kid": "rsa-1", "algorithm": algorithm, "private_key_file": str(path)}])
    monkeypatch.delenv("JWT_MODULE_ACCESS_SECRET")
    monkeypatch.delenv("JWT_MODULE_REFRESH_SECRET")
    monkeypatch.setenv("JWT_MODULE_ACCESS_KEYS", keys)
    monkeypatch.setenv("JWT_MODULE_REFRESH_KEYS", keys)


def _rsa_private_pem() -> bytes:
    return private_pem(rsa_key())


@TARGETS
@pytest.mark.parametrize("kid", ["rsa-1", DROP])
async def test_hmac_token_signed_with_the_rsa_public_key_is_refused(
    target: Target,
    kid: Any,
    users: InMemoryUsers,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # The classic confusion: the public key, which anyone has, used as an HMAC secret.
    use_rsa_keys(monkeypatch, tmp_path)
    app, _ = build_app(users)
    public_key = public_pem(rsa_key())
    expected = "algorithm_mismatch" if kid == "rsa-1" else "unknown_key"
    async with serve(app) as client:
        for published_form in (public_key, public_key.strip()):
            token = forge(
                header(target.token_type, alg="HS256", kid=kid),
                claims(),
                key=published_form,
                algorithm="HS256",
            )
            await attack(client, target, token, caplog, expected)
    assert users.subject_lookups == []


@TARGETS
async def test_rs256_key_refuses_a_ps256_token_even_signed_by_that_key(
    target: Target,
    users: InMemoryUsers,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_rsa_keys(monkeypatch, tmp_path)
    app, _ = build_app(users)
    token = forge(
        header(target.token_type, alg="PS256", kid="rsa-1"),
        claims(),
        key=rsa_key(),
        algorithm="PS256",
    )
    async with serve(app) as client:
        await attack(client, target, token, caplog, "algorithm_mismatch")
    assert users.subject_lookups == []
    # The same token as RS256 verifies: the refusal is the pin, not the key.
    control = forge(
        header(target.token_type, alg="RS256", kid="rsa-1"),
        claims(),
        key=rsa_key(),
        algorithm="RS256",
    )
    assert JwtModule.for_root().service.verify(target.token_type, control)["sub"] == "user-1"


# -- wrong key, wrong type ----------------------------------------------------------------------


@TARGETS
async def test_a_token_signed_with_another_secret_is_refused(
    target: Target, users: InMemoryUsers, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = build_app(users)
    token = forge(
        header(target.token_type),
        claims(),
        key=b"an-attacker-secret-that-is-long-enough-0123",
        algorithm="HS256",
    )
    async with serve(app) as client:
        await attack(client, target, token, caplog, "bad_signature")
    assert users.subject_lookups == []


@TARGETS
async def test_a_token_signed_with_another_rsa_key_under_the_right_kid_is_refused(
    target: Target,
    users: InMemoryUsers,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_rsa_keys(monkeypatch, tmp_path)
    app, _ = build_app(users)
    token = forge(
        header(target.token_type, alg="RS256", kid="rsa-1"),
        claims(),
        key=new_private_key("RS256"),
        algorithm="RS256",
    )
    async with serve(app) as client:
        await attack(client, target, token, caplog, "bad_signature")
    assert users.subject_lookups == []


async def test_with_one_shared_secret_the_token_types_are_not_interchangeable(
    users: InMemoryUsers, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JWT_MODULE_REFRESH_SECRET", ACCESS_SECRET)
    app, _ = build_app(users)
    service = JwtModule.for_root().service
    access_token = service.sign("access", {"sub": "user-1"})
    refresh_token = service.sign("refresh", {"sub": "user-1"})
    async with serve(app) as client:
        await attack(client, REFRESH, access_token, caplog, "wrong_type")
        await attack(client, ACCESS, refresh_token, caplog, "wrong_type")
        assert users.subject_lookups == []
        # Each is good where it belongs: the shared secret verifies both.
        assert (await ACCESS.send(client, access_token)).status_code == 200
    assert users.subject_lookups == ["user-1"]


@TARGETS
@pytest.mark.parametrize("typ", [DROP, None, "JWT", "jwt", "at+jwt+x", ["at+jwt"], "rt+jwt"])
async def test_a_missing_or_foreign_typ_is_refused(
    target: Target, typ: Any, users: InMemoryUsers, caplog: pytest.LogCaptureFixture
) -> None:
    if typ == "rt+jwt" and target is REFRESH:
        typ = "at+jwt"
    app, _ = build_app(users)
    token = signed(target, {"typ": typ})
    async with serve(app) as client:
        await attack(client, target, token, caplog, "wrong_type")
    assert users.subject_lookups == []


# -- time claims (RFC 7519 §4.1.4-4.1.6) --------------------------------------------------------


@TARGETS
async def test_an_expired_token_is_refused_and_logged_at_info(
    target: Target, users: InMemoryUsers, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = build_app(users)
    now = int(time.time())
    token = signed(target, iat=now - 7200, exp=now - 60)
    async with serve(app) as client:
        await attack(client, target, token, caplog, "expired")
    levels = [record.levelno for record in caplog.records if record.name == SECURITY_LOGGER]
    assert levels == [logging.INFO]
    assert users.subject_lookups == []


@TARGETS
async def test_a_token_not_valid_before_a_future_nbf_is_refused(
    target: Target, users: InMemoryUsers, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = build_app(users)
    token = signed(target, nbf=int(time.time()) + 600)
    async with serve(app) as client:
        await attack(client, target, token, caplog, "not_yet_valid")
    assert users.subject_lookups == []


@TARGETS
async def test_a_token_issued_in_the_future_is_refused(
    target: Target, users: InMemoryUsers, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = build_app(users)
    now = int(time.time())
    token = signed(target, iat=now + 600, exp=now + 1200)
    async with serve(app) as client:
        await attack(client, target, token, caplog, "issued_in_future")
    assert users.subject_lookups == []


# -- required and ill-typed claims --------------------------------------------------------------


@TARGETS
@pytest.mark.parametrize("claim", ["exp", "iat", "sub", "jti"])
async def test_a_token_missing_a_required_claim_is_refused(
    target: Target, claim: str, users: InMemoryUsers, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = build_app(users)
    token = signed(target, **{claim: DROP})
    async with serve(app) as client:
        await attack(client, target, token, caplog, "missing_claim")
    assert users.subject_lookups == []


ILL_TYPED_CLAIMS = [
    {"exp": "4102444800"},
    {"exp": True},
    {"iat": False},
    {"iat": "0"},
    {"nbf": "0"},
    {"nbf": [0]},
    {"exp": None},
    {"exp": -1},
    {"exp": 10**20},
    {"exp": 1e300},
    {"exp": {"$gt": 0}},
    {"sub": 1},
    {"sub": ""},
    {"sub": ["user-1"]},
    {"sub": "u" * 1025},
    {"jti": 123456789012345678901234567890},
    {"jti": "too-short"},
    {"jti": None},
]


@TARGETS
@pytest.mark.parametrize("changes", ILL_TYPED_CLAIMS, ids=lambda changes: json.dumps(changes)[:40])
async def test_an_ill_typed_or_absurd_claim_is_refused(
    target: Target, changes: dict[str, Any], users: InMemoryUsers, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = build_app(users)
    token = signed(target, **changes)
    async with serve(app) as client:
        await attack(client, target, token, caplog, "invalid_claim")
    assert users.subject_lookups == []


@TARGETS
@pytest.mark.parametrize(
    ("literal", "reason"),
    [
        ("NaN", "malformed"),
        ("Infinity", "malformed"),
        ("-Infinity", "malformed"),
        ("1e400", "invalid_claim"),
        ("9" * 4400, "malformed"),
    ],
)
async def test_nan_infinite_and_huge_numbers_are_refused(
    target: Target,
    literal: str,
    reason: str,
    users: InMemoryUsers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Written by hand: json.dumps cannot produce these, an attacker can.
    app, _ = build_app(users)
    valid = claims()
    payload = f'{{"sub":"user-1","iat":{valid["iat"]},"exp":{literal},"jti":"{valid["jti"]}"}}'
    token = signed_raw(target, json.dumps(header(target.token_type)), payload)
    async with serve(app) as client:
        await attack(client, target, token, caplog, reason)
    assert users.subject_lookups == []


# -- duplicate members, encoding, size, nesting --------------------------------------------------


@TARGETS
async def test_duplicate_member_names_are_refused_in_header_and_payload(
    target: Target, users: InMemoryUsers, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = build_app(users)
    typ = header(target.token_type)["typ"]
    valid = claims()
    duplicate_header = f'{{"alg":"none","typ":"{typ}","alg":"HS256"}}'
    duplicate_payload = (
        f'{{"sub":"admin","iat":{valid["iat"]},"exp":{valid["exp"]},'
        f'"jti":"{valid["jti"]}","sub":"user-1"}}'
    )
    async with serve(app) as client:
        token = signed_raw(target, duplicate_header, json.dumps(claims()))
        await attack(client, target, token, caplog, "malformed")
        token = signed_raw(target, json.dumps(header(target.token_type)), duplicate_payload)
        await attack(client, target, token, caplog, "malformed")
    assert users.subject_lookups == []


@TARGETS
@pytest.mark.parametrize(
    "payload",
    [
        b'{"sub":"\xe9","iat":1,"exp":4102444800,"jti":"abcdefghijklmnopqrstuvwxyz"}',
        b'\xef\xbb\xbf{"sub":"user-1"}',
        '{"sub":"\\ud800","iat":1,"exp":4102444800,"jti":"abcdefghijklmnopqrstuvwxyz"}',
        '["sub","user-1"]',
        '"user-1"',
        "",
        "{",
    ],
    ids=["latin-1", "bom", "lone-surrogate", "array", "string", "empty", "truncated"],
)
async def test_a_payload_that_is_not_a_utf8_json_object_is_refused(
    target: Target, payload: str | bytes, users: InMemoryUsers, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = build_app(users)
    token = signed_raw(target, json.dumps(header(target.token_type)), payload)
    async with serve(app) as client:
        await attack(client, target, token, caplog, "malformed")
    assert users.subject_lookups == []


@TARGETS
@pytest.mark.parametrize(
    "header_bytes",
    [b"\xff\xfe{}", b'["HS256"]', b"null", b'{"alg":"HS256",}', b'{"alg":"HS256"'],
    ids=["not-utf8", "array", "null", "trailing-comma", "truncated"],
)
async def test_a_header_that_is_not_a_utf8_json_object_is_refused(
    target: Target, header_bytes: bytes, users: InMemoryUsers, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = build_app(users)
    token = forge(header_bytes, claims(), key=SECRETS[target.token_type], algorithm="HS256")
    async with serve(app) as client:
        await attack(client, target, token, caplog, "malformed")
    assert users.subject_lookups == []


@TARGETS
async def test_an_oversized_token_is_refused_before_decoding(
    target: Target, users: InMemoryUsers, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = build_app(users)
    padded = signed(target, padding="x" * 9000)
    # Not even base64: refused for its size, so no decoding was attempted.
    garbage = "!" * 8193
    async with serve(app) as client:
        await attack(client, target, padded, caplog, "too_large")
        await attack(client, target, garbage, caplog, "too_large")
    assert users.subject_lookups == []


@TARGETS
async def test_deeply_nested_header_and_payload_are_refused(
    target: Target, users: InMemoryUsers, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = build_app(users)
    nested: Any = "bottom"
    for _ in range(40):
        nested = {"n": nested}
    typ = header(target.token_type)["typ"]
    async with serve(app) as client:
        token = signed(target, deep=nested)
        await attack(client, target, token, caplog, "malformed")
        token = signed(target, {"x": nested})
        await attack(client, target, token, caplog, "malformed")
        # Deep enough to exhaust a recursive parser, yet under the size limit.
        brackets = '{"alg":"HS256","typ":"' + typ + '","x":' + "[" * 2500 + "]" * 2500 + "}"
        token = signed_raw(target, brackets, json.dumps(claims()))
        await attack(client, target, token, caplog, "malformed")
    assert users.subject_lookups == []


# -- header tricks (RFC 7515 §4.1, RFC 8725 §3.10) ----------------------------------------------


@TARGETS
@pytest.mark.parametrize(
    "changes",
    [{"crit": ["exp"], "exp": 1}, {"crit": []}, {"b64": False, "crit": ["b64"]}, {"b64": True}],
    ids=["crit", "empty-crit", "b64-crit", "b64"],
)
async def test_critical_headers_are_refused(
    target: Target, changes: dict[str, Any], users: InMemoryUsers, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = build_app(users)
    token = signed(target, changes)
    async with serve(app) as client:
        await attack(client, target, token, caplog, "critical_header")
    assert users.subject_lookups == []


class _RecordingHandler(BaseHTTPRequestHandler):
    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"keys":[]}')

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def key_server() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on loopback that records every request: where jku/x5u would point."""
    hits: list[str] = []
    handler = type("Handler", (_RecordingHandler,), {"hits": hits})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@TARGETS
async def test_key_references_in_the_header_are_never_followed_or_used(
    target: Target,
    users: InMemoryUsers,
    caplog: pytest.LogCaptureFixture,
    key_server: tuple[str, list[str]],
) -> None:
    base_url, hits = key_server
    app, _ = build_app(users)
    attacker = ec.generate_private_key(ec.SECP256R1())
    attacker_jwk = ECAlgorithm.to_jwk(attacker.public_key(), as_dict=True)
    tricks: list[dict[str, Any]] = [
        {"jku": f"{base_url}/jwks.json"},
        {"x5u": f"{base_url}/cert.pem"},
        {"jwk": attacker_jwk},
        {"x5c": [b64(b"not really a certificate")]},
    ]
    async with serve(app) as client:
        for trick in tricks:
            token = forge(
                header(target.token_type, alg="ES256", **trick),
                claims(),
                key=attacker,
                algorithm="ES256",
            )
            await attack(client, target, token, caplog, "key_reference_header")
            # Signed with the real secret, the reference is still refused, not ignored.
            await attack(client, target, signed(target, trick), caplog, "key_reference_header")
    assert hits == []
    assert users.subject_lookups == []


@TARGETS
@pytest.mark.parametrize(
    "kid",
    ["", "../../../../dev/null", "' OR '1'='1", "rsa-1", 0, None, ["x"], {"kid": "x"}, True],
    ids=lambda kid: repr(kid)[:20],
)
async def test_a_kid_only_selects_among_configured_keys(
    target: Target, kid: Any, users: InMemoryUsers, caplog: pytest.LogCaptureFixture
) -> None:
    # The simple setup has one key without a kid: any kid, even null, finds nothing.
    app, _ = build_app(users)
    token = signed(target, {"kid": kid})
    async with serve(app) as client:
        await attack(client, target, token, caplog, "unknown_key")
    assert users.subject_lookups == []


# -- truncated and altered signatures ------------------------------------------------------------


def _alterations(token: str) -> list[tuple[str, set[str], str]]:
    head, body, signature = token.split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    # HS256 signatures are 32 bytes: 43 characters whose last one carries 2 spare bits.
    last = signature[-1]
    spare_bits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    same_bytes = signature[:-1] + spare_bits[spare_bits.index(last) ^ 1]
    other_payload = segment(json.dumps({**json.loads(_decode(body)), "sub": "admin"}))
    malformed, bad_signature = {"malformed"}, {"bad_signature"}
    return [
        # A cut mid-quantum leaves spare bits that are set (malformed) or, by chance, clear.
        (f"{head}.{body}.{signature[:-1]}", malformed | bad_signature, "cut by one character"),
        (f"{head}.{body}.{signature[:40]}", bad_signature, "cut by two bytes"),
        (f"{head}.{body}.", bad_signature, "signature removed"),
        (f"{head}.{body}", malformed, "signature segment removed"),
        (f"{head}.{body}.{flipped}", bad_signature, "one character changed"),
        (f"{head}.{body}.{same_bytes}", malformed, "spare bits changed"),
        (f"{head}.{body}.{signature}=", malformed, "padding added"),
        (f"{head}.{body}.{signature}AAAA", bad_signature, "bytes appended"),
        (f"{head}.{other_payload}.{signature}", bad_signature, "payload changed"),
        (f"{head}.{body}.{signature}.{signature}", malformed, "extra segment"),
        (f" {token}", malformed, "leading space"),
    ]


def _decode(segment_text: str) -> bytes:
    return base64.urlsafe_b64decode(segment_text + "=" * (-len(segment_text) % 4))


@TARGETS
async def test_truncated_or_altered_signatures_are_refused(
    target: Target, users: InMemoryUsers, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = build_app(users)
    token = signed(target)
    async with serve(app) as client:
        for altered, reasons, what in _alterations(token):
            caplog.clear()
            with caplog.at_level(logging.INFO, logger=SECURITY_LOGGER):
                response = await target.send(client, altered)
            if target is ACCESS and what == "leading space":
                # The Authorization header trims it: the token arrives intact.
                assert response.status_code == 200
                users.subject_lookups.clear()
                continue
            assert response.status_code == 401, what
            assert response.headers["www-authenticate"] == INVALID_TOKEN_CHALLENGE
            assert_no_token(response, altered)
            [reason] = refusal_reasons(caplog)
            assert reason in reasons, what
    assert users.subject_lookups == []


# The order of the P-256 group: (r, s) and (r, n - s) are both valid ECDSA signatures.
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _other_s(token: str) -> str:
    head, body, signature = token.split(".")
    raw = _decode(signature)
    s = int.from_bytes(raw[32:], "big")
    return f"{head}.{body}.{b64(raw[:32] + (P256_ORDER - s).to_bytes(32, 'big'))}"


@TARGETS
async def test_an_es256_token_has_one_spelling_the_n_minus_s_variant_is_refused(
    target: Target,
    users: InMemoryUsers,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = new_private_key("ES256")
    entry = {"kid": "es", "algorithm": "ES256", "private_key": private_pem(key).decode()}
    for token_type in ("access", "refresh"):
        monkeypatch.delenv(f"JWT_MODULE_{token_type.upper()}_SECRET")
        monkeypatch.setenv(f"JWT_MODULE_{token_type.upper()}_KEYS", json.dumps([entry]))
    service = JwtModule.for_root().service
    tokens = [service.sign(target.token_type, {"sub": "user-1"}) for _ in range(32)]
    # Signed low-s: s at most n / 2, whatever the random nonce gave.
    for token in tokens:
        assert int.from_bytes(_decode(token.split(".")[2])[32:], "big") <= P256_ORDER // 2
    # A high-s token of the key itself, as another library would sign it, is refused too.
    high = forge(
        header(target.token_type, kid="es", alg="ES256"), claims(), key=key, algorithm="ES256"
    )
    while int.from_bytes(_decode(high.split(".")[2])[32:], "big") <= P256_ORDER // 2:
        high = forge(
            header(target.token_type, kid="es", alg="ES256"), claims(), key=key, algorithm="ES256"
        )
    app, refresh = build_app(users)
    async with serve(app) as client:
        if target is REFRESH:
            valid = (await refresh.issue(users.users["user-1"]))["refreshToken"]
        else:
            valid = tokens[0]
        await attack(client, target, _other_s(valid), caplog, "bad_signature")
        await attack(client, target, high, caplog, "bad_signature")
        assert users.subject_lookups == []
        # The one spelling is accepted.
        assert (await target.send(client, valid)).status_code == 200


def test_hmac_comparison_is_on_the_exact_signature() -> None:
    # The forger and the verifier agree on HS256, so a refusal above is never a forger bug.
    key = SECRETS["access"]
    token = forge(header("access"), claims(), key=key, algorithm="HS256")
    head, body, signature = token.split(".")
    expected = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    assert b64(expected) == signature
    assert JwtModule.for_root().service.verify("access", token)["sub"] == "user-1"


# -- issuer and audience (RFC 7519 §4.1.1, §4.1.3) ----------------------------------------------


@TARGETS
@pytest.mark.parametrize(
    ("iss", "aud", "reason"),
    [
        (DROP, "api", "wrong_issuer"),
        ("https://issuer.example.evil", "api", "wrong_issuer"),
        ("https://issuer.example/", "api", "wrong_issuer"),
        (["https://issuer.example"], "api", "wrong_issuer"),
        ("https://issuer.example", DROP, "wrong_audience"),
        ("https://issuer.example", "ap", "wrong_audience"),
        ("https://issuer.example", "api2", "wrong_audience"),
        ("https://issuer.example", ["other"], "wrong_audience"),
        ("https://issuer.example", {"api": True}, "wrong_audience"),
    ],
)
async def test_issuer_and_audience_are_compared_exactly_when_configured(
    target: Target,
    iss: Any,
    aud: Any,
    reason: str,
    users: InMemoryUsers,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JWT_MODULE_ISSUER", "https://issuer.example")
    monkeypatch.setenv("JWT_MODULE_AUDIENCE", "api")
    app, _ = build_app(users)
    async with serve(app) as client:
        await attack(client, target, signed(target, iss=iss, aud=aud), caplog, reason)
    assert users.subject_lookups == []
    # An audience list that names this service is accepted.
    accepted = signed(target, iss="https://issuer.example", aud=["other", "api"])
    assert JwtModule.for_root().service.verify(target.token_type, accepted)["aud"][1] == "api"


@TARGETS
# null and [] are audiences too: only a token without "aud" passes.
@pytest.mark.parametrize("audience", ["someone-else", None, []], ids=repr)
async def test_an_audience_is_refused_when_none_is_configured(
    target: Target, audience: Any, users: InMemoryUsers, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = build_app(users)
    async with serve(app) as client:
        await attack(client, target, signed(target, aud=audience), caplog, "wrong_audience")
    assert users.subject_lookups == []


# -- the request around the token (RFC 6750 §2, §3.1) -------------------------------------------


async def test_two_different_tokens_in_two_places_are_an_invalid_request(
    users: InMemoryUsers,
) -> None:
    app = FastAPI()
    module = AuthRefreshModule.for_root(
        user_lookup_service=users,
        settings={
            "jwt_from_request": ChainExtractor(
                [ExtractJwt.from_body_field(), ExtractJwt.from_auth_header_as_bearer_token()]
            )
        },
    )
    module.attach(app)
    async with serve(app) as client:
        first = (await module.issue(users.users["user-1"]))["refreshToken"]
        second = (await module.issue(users.users["user-1"]))["refreshToken"]
        response = await client.post(
            "/auth/refresh",
            json={"refreshToken": first},
            headers={"Authorization": f"Bearer {second}"},
        )
        assert response.status_code == 400
        assert response.json()["errorCode"] == "AUTH_REFRESH_INVALID_REQUEST_ERROR"
        assert_no_token(response, first)
        assert_no_token(response, second)
        assert users.subject_lookups == []
        same = await client.post(
            "/auth/refresh",
            json={"refreshToken": first},
            headers={"Authorization": f"Bearer {first}"},
        )
    assert same.status_code == 200


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b'{"refreshToken": ', "application/json", 400),
        (b'{"refreshToken": "\xff"}', "application/json", 400),
        ('{"refreshToken": "x"}'.encode("utf-16"), "application/json", 400),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 413),
        (b"[" * 30_000 + b"]" * 30_000, "application/json", 400),
        (
            b"--xyz\r\nContent-Disposition: form-data\r\n\r\nno name\r\n--xyz--\r\n",
            "multipart/form-data; boundary=xyz",
            400,
        ),
        (b'{"refreshToken": 42}', "application/json", 401),
        (b"refreshToken=", "application/x-www-form-urlencoded", 401),
        (b"<xml/>", "application/xml", 401),
    ],
    ids=[
        "truncated-json",
        "not-utf8",
        "utf16",
        "huge",
        "deep",
        "broken-multipart",
        "number",
        "empty-form-field",
        "xml",
    ],
)
async def test_malformed_and_oversized_bodies_get_a_4xx(
    content: bytes, content_type: str, status: int, users: InMemoryUsers
) -> None:
    app, _ = build_app(users)
    async with serve(app) as client:
        response = await client.post(
            "/auth/refresh", content=content, headers={"Content-Type": content_type}
        )
    assert response.status_code == status, response.text
    assert response.json()["statusCode"] == status
    assert users.subject_lookups == []


async def test_a_streamed_body_without_length_is_cut_off_at_the_limit(
    users: InMemoryUsers,
) -> None:
    app, _ = build_app(users)
    sent: list[int] = []

    async def endless() -> Any:
        for _ in range(10_000):
            sent.append(1)
            yield b" " * 4096

    async with serve(app) as client:
        response = await client.post(
            "/auth/refresh", content=endless(), headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 413
    assert response.json()["errorCode"] == "AUTH_REFRESH_REQUEST_TOO_LARGE_ERROR"
    # The reader stopped at 64 KiB: 17 chunks of 4 KiB, not the 40 MB offered.
    assert len(sent) < 100


# -- logging -------------------------------------------------------------------------------------


async def test_no_token_ever_reaches_a_log(
    users: InMemoryUsers, caplog: pytest.LogCaptureFixture
) -> None:
    app, refresh = build_app(users)
    caplog.set_level(logging.DEBUG)
    sent: list[str] = []
    async with serve(app) as client:
        good = (await refresh.issue(users.users["user-1"]))["refreshToken"]
        access = JwtModule.for_root().service.sign("access", {"sub": "user-1"})
        forged = [
            forge(header("refresh", alg="none"), claims()),
            signed(REFRESH, exp=int(time.time()) - 60),
            forge(header("refresh"), claims(), key=b"x" * 40, algorithm="HS256"),
            signed(REFRESH, {"kid": "\n\rFAKE LOG LINE"}),
            signed(REFRESH, sub="ghost"),
            access,
            good,
        ]
        for token in forged:
            sent.append(token)
            response = await REFRESH.send(client, token)
            sent.extend(response.json().values() if response.status_code == 200 else ())
        sent.append(access)
        await ACCESS.send(client, access)
        await ACCESS.send(client, good)
    assert set(refusal_reasons(caplog)) >= {
        "algorithm_mismatch",
        "expired",
        "bad_signature",
        "unknown_key",
        "wrong_type",
    }
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__)
        assert "FAKE LOG LINE" not in text
        for token in sent:
            for part in token.split("."):
                if len(part) >= 8:
                    assert part not in text, record.name


async def _read_fields(headers: list[tuple[bytes, bytes]], body: bytes, **limit: int) -> Any:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    return await read_body_fields(Request(scope, receive), **limit)


async def test_the_body_limit_and_content_length_are_checked_before_parsing() -> None:
    json_type = (b"content-type", b"application/json")
    body = b'{"refreshToken": "abc"}'
    assert await _read_fields([json_type], body) == {"refreshToken": "abc"}
    assert await _read_fields([json_type], body, max_bytes=len(body)) == {"refreshToken": "abc"}
    with pytest.raises(RequestTooLargeError):
        await _read_fields([json_type], body, max_bytes=len(body) - 1)
    declared = (b"content-length", str(len(body) + 1).encode())
    with pytest.raises(RequestTooLargeError):
        await _read_fields([json_type, declared], body, max_bytes=len(body))
    for bad_length in ("²", "-1", "1e3", " "):
        with pytest.raises(InvalidRequestError, match="Content-Length"):
            await _read_fields([json_type, (b"content-length", bad_length.encode("latin-1"))], body)


# -- limits at their edges: each fails if its limit moves ----------------------------------------


@TARGETS
async def test_the_limits_hold_at_their_edges(
    target: Target, users: InMemoryUsers, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = build_app(users)

    def nested(levels: int) -> Any:
        # Below the claims object, which is one level more.
        value: Any = "bottom"
        for _ in range(levels):
            value = {"n": value}
        return value

    async with serve(app) as client:
        # The right algorithm and type, spelled differently: exact, case-sensitive comparisons.
        await attack(client, target, signed(target, {"alg": "hs256"}), caplog, "algorithm_mismatch")
        typ = header(target.token_type)["typ"]
        await attack(client, target, signed(target, {"typ": f" {typ} "}), caplog, "wrong_type")
        await attack(client, target, signed(target, jti="j" * 21), caplog, "invalid_claim")
        await attack(
            client, target, signed(target, deep=nested(MAX_JSON_DEPTH)), caplog, "malformed"
        )
    # At each limit, the verifier accepts.
    service = JwtModule.for_root().service
    for accepted in (signed(target, jti="j" * 22), signed(target, deep=nested(MAX_JSON_DEPTH - 1))):
        assert service.verify(target.token_type, accepted)["sub"] == "user-1"


@TARGETS
@pytest.mark.parametrize("digits", [400, 4000])
async def test_a_time_claim_too_large_for_a_float_is_an_invalid_claim(
    target: Target, digits: int, users: InMemoryUsers, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = build_app(users)
    async with serve(app) as client:
        await attack(client, target, signed(target, exp=int("9" * digits)), caplog, "invalid_claim")
    with pytest.raises(ValueError, match="NumericDate"):
        JwtModule.for_root().service.sign("access", {"sub": "user-1", "exp": int("9" * digits)})


# -- one token per place: repeats are refused, never resolved silently ---------------------------


async def test_a_token_given_twice_in_one_place_is_an_invalid_request(
    users: InMemoryUsers,
) -> None:
    app, module = build_app(users)
    bearer_app = FastAPI()
    bearer_module = AuthRefreshModule.for_root(
        user_lookup_service=users,
        settings={"jwt_from_request": ExtractJwt.from_auth_header_as_bearer_token()},
    )
    bearer_module.attach(bearer_app)
    async with serve(app) as client, serve(bearer_app) as bearer_client:
        good = (await module.issue(users.users["user-1"]))["refreshToken"]
        access = JwtModule.for_root().service.sign("access", {"sub": "user-1"})
        duplicate_member = '{"refreshToken": "garbage", "refreshToken": "' + good + '"}'
        answers = [
            await client.post(
                "/auth/refresh",
                content=duplicate_member,
                headers={"content-type": "application/json"},
            ),
            await client.post(
                "/auth/refresh",
                content=f"refreshToken=garbage&refreshToken={good}",
                headers={"content-type": "application/x-www-form-urlencoded"},
            ),
            await bearer_client.post(
                "/auth/refresh",
                headers=[("authorization", f"Bearer {good}"), ("authorization", "Bearer x")],
            ),
            await client.get(
                "/me",
                headers=[("authorization", f"Bearer {access}"), ("authorization", "Bearer x")],
            ),
        ]
        for response in answers:
            assert response.status_code == 400, response.text
            assert response.json()["errorCode"].endswith("INVALID_REQUEST_ERROR")
            assert_no_token(response, good)
        assert users.subject_lookups == []
        # Each alone is fine.
        assert (await client.post("/auth/refresh", json={"refreshToken": good})).status_code == 200


@pytest.mark.parametrize(
    ("cookie_header", "status"),
    [("refresh_token=garbage; refresh_token={token}", 400), ("refresh_token={token}", 200)],
    ids=["two-values", "one"],
)
async def test_two_refresh_cookies_of_different_values_are_an_invalid_request(
    cookie_header: str, status: int, users: InMemoryUsers
) -> None:
    app = FastAPI()
    module = AuthRefreshModule.for_root(
        user_lookup_service=users, settings={"cookie_transport": True}, logout_path="/auth/logout"
    )
    module.attach(app)
    async with serve(app, base_url="https://testserver") as client:
        token = (await module.issue(users.users["user-1"]))["refreshToken"]
        response = await client.post(
            "/auth/refresh",
            headers={
                "cookie": cookie_header.format(token=token),
                "x-csrf-token": csrf_token_for(
                    token,
                    key=csrf_keys_of(module.container.settings(), module.container.issuer())[0],
                ),
            },
        )
    assert response.status_code == status, response.text
