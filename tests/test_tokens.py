"""JwtService: what it signs, and the verification rules at the edges (clock, leeway, sizes)."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest

from auth_refresh import InvalidTokenError, JwtService, JwtSettings
from auth_refresh._utils import base64url, base64url_decode, canonical_base64url_decode
from auth_refresh.settings import build_settings
from auth_refresh.tokens.jwt import MAX_JSON_DEPTH, new_token_id
from conftest import ACCESS_SECRET
from forgery import DROP, SECURITY_LOGGER, claims, forge, header

NOW = 1_900_000_000


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def service(clock: Clock | None = None, **settings: Any) -> JwtService:
    return JwtService(build_settings(JwtSettings, settings), clock=clock or Clock())


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    def decode(segment: str) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(
            base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        )
        return value

    head, body, _ = token.split(".")
    return decode(head), decode(body)


def reason_of(jwt_service: JwtService, token_type: Any, token: object) -> str:
    with pytest.raises(InvalidTokenError) as caught:
        jwt_service.verify(token_type, token)
    return caught.value.reason


def access_token_at(iat: int, exp: int, **changes: Any) -> str:
    return forge(
        header("access"),
        claims(iat=iat, exp=exp, **changes),
        key=ACCESS_SECRET.encode(),
        algorithm="HS256",
    )


# -- signing -------------------------------------------------------------------------------------


def test_sign_writes_the_typ_alg_and_registered_claims() -> None:
    jwt_service = service()
    token = jwt_service.sign("refresh", {"sub": "user-1", "fam": "family-1"})
    head, body = parts(token)
    assert head == {"alg": "HS256", "typ": "rt+jwt"}
    assert body["sub"] == "user-1"
    assert body["fam"] == "family-1"
    assert body["iat"] == NOW
    assert body["exp"] == NOW + 7 * 86400
    assert len(body["jti"]) == 22
    assert jwt_service.verify("refresh", token) == body


def test_each_token_gets_a_fresh_128_bit_token_id() -> None:
    jwt_service = service()
    ids = {parts(jwt_service.sign("access", {"sub": "u"}))[1]["jti"] for _ in range(200)}
    assert len(ids) == 200
    for token_id in ids:
        assert len(base64.urlsafe_b64decode(token_id + "==")) == 16
    assert len(new_token_id()) == 22


def test_the_lifetimes_come_from_the_settings() -> None:
    jwt_service = service(access_expires_in="90s", refresh_expires_in="2h")
    assert parts(jwt_service.sign("access", {"sub": "u"}))[1]["exp"] == NOW + 90
    assert parts(jwt_service.sign("refresh", {"sub": "u"}))[1]["exp"] == NOW + 7200


def test_a_given_exp_can_shorten_the_lifetime_but_never_extend_it() -> None:
    jwt_service = service()
    assert parts(jwt_service.sign("access", {"sub": "u", "exp": NOW + 60}))[1]["exp"] == NOW + 60
    assert parts(jwt_service.sign("access", {"sub": "u", "exp": NOW + 10**6}))[1]["exp"] == (
        NOW + 3600
    )


def test_a_given_token_id_is_kept_when_long_enough() -> None:
    jwt_service = service()
    token_id = new_token_id()
    assert parts(jwt_service.sign("refresh", {"sub": "u", "jti": token_id}))[1]["jti"] == token_id
    with pytest.raises(ValueError, match="jti"):
        jwt_service.sign("refresh", {"sub": "u", "jti": "short"})


@pytest.mark.parametrize(
    ("claims_given", "message"),
    [
        ({}, "sub"),
        ({"sub": ""}, "sub"),
        ({"sub": 1}, "sub"),
        ({"sub": "u", "iat": NOW}, "iat"),
        ({"sub": "u", "exp": "soon"}, "exp"),
        ({"sub": "u", "exp": float("nan")}, "exp"),
        ({"sub": "u", "nbf": True}, "nbf"),
        ({"sub": "u", "aud": "api"}, "aud"),
        ({"sub": "u", "extra": float("inf")}, "JSON"),
        ({"sub": "u", "padding": "x" * 9000}, "MAX_TOKEN_BYTES"),
        ({"sub": "u", "name": "\ud800"}, "Unicode"),
        ({"sub": "u", "cnf": {"jkt": "\udfff"}}, "Unicode"),
    ],
)
def test_sign_refuses_claims_verify_would_refuse(
    claims_given: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        service().sign("access", claims_given)


def test_a_confirmation_object_reads_back_as_signed() -> None:
    jwt_service = service()
    claims = {"sub": "u", "cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}}
    assert jwt_service.verify("access", jwt_service.sign("access", claims))["cnf"] == claims["cnf"]


def test_sign_refuses_claims_nested_too_deeply() -> None:
    nested: Any = 1
    for _ in range(MAX_JSON_DEPTH):
        nested = [nested]
    jwt_service = service()
    # The payload object is one level, so MAX_JSON_DEPTH - 1 more levels still fit.
    assert jwt_service.verify("access", jwt_service.sign("access", {"sub": "u", "n": nested[0]}))
    with pytest.raises(ValueError, match="nested"):
        jwt_service.sign("access", {"sub": "u", "n": nested})


def test_issuer_and_audience_are_written_when_configured() -> None:
    jwt_service = service(issuer="https://issuer.example", audience="api")
    body = parts(jwt_service.sign("access", {"sub": "u"}))[1]
    assert (body["iss"], body["aud"]) == ("https://issuer.example", "api")
    with pytest.raises(ValueError, match="iss"):
        jwt_service.sign("access", {"sub": "u", "iss": "someone-else"})


# -- verification at the edges --------------------------------------------------------------------


def test_the_leeway_setting_bounds_clock_skew_on_exp_nbf_and_iat() -> None:
    clock = Clock()
    token = access_token_at(NOW - 100, NOW)
    lenient, strict = service(clock, leeway=5), service(clock, leeway=0)
    clock.now = NOW + 4.9
    assert lenient.verify("access", token)
    assert reason_of(strict, "access", token) == "expired"
    clock.now = NOW + 5
    assert reason_of(lenient, "access", token) == "expired"
    clock.now = NOW
    future = access_token_at(NOW + 5, NOW + 100, nbf=NOW + 5)
    assert lenient.verify("access", future)
    assert reason_of(strict, "access", access_token_at(NOW + 1, NOW + 100)) == "issued_in_future"
    assert reason_of(strict, "access", access_token_at(NOW, NOW + 100, nbf=NOW + 1)) == (
        "not_yet_valid"
    )


def test_the_default_leeway_is_five_seconds() -> None:
    assert build_settings(JwtSettings).leeway == 5


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/At+JWT"])
def test_typ_is_compared_as_a_media_type(typ: str) -> None:
    # RFC 7515 §4.1.9: case-insensitive, "application/" may be left out.
    token = forge(
        header("access", typ=typ), claims(), key=ACCESS_SECRET.encode(), algorithm="HS256"
    )
    assert service(Clock(claims()["iat"])).verify("access", token)["sub"] == "user-1"


def test_time_claims_may_be_fractional_numbers() -> None:
    token = access_token_at(NOW - 0.5, NOW + 0.5)  # type: ignore[arg-type]
    assert service().verify("access", token)["exp"] == NOW + 0.5


def test_the_size_limit_is_a_setting_applied_before_decoding() -> None:
    jwt_service = service(max_token_bytes=300)
    token = jwt_service.sign("access", {"sub": "u"})
    assert len(token) <= 300
    assert jwt_service.verify("access", token)
    padded = access_token_at(NOW, NOW + 60, pad="x" * 200)
    assert len(padded) > 300
    assert reason_of(jwt_service, "access", padded) == "too_large"
    assert reason_of(jwt_service, "access", "%" * 301) == "too_large"
    assert reason_of(jwt_service, "access", "%" * 300) == "malformed"
    with pytest.raises(ValueError, match="MAX_TOKEN_BYTES"):
        jwt_service.sign("access", {"sub": "u", "pad": "x" * 200})


@pytest.mark.parametrize("token", [None, 1, b"a.b.c", "", "a.b", "é.é.é", ["a", "b", "c"]])
def test_anything_but_a_compact_token_string_is_malformed(token: object) -> None:
    assert reason_of(service(), "access", token) == "malformed"


def test_a_missing_claim_is_reported_before_its_type() -> None:
    token = access_token_at(NOW, NOW + 60, sub=DROP, jti=1)
    assert reason_of(service(), "access", token) == "missing_claim"


def test_refusals_are_logged_with_their_reason_and_never_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    jwt_service = service()
    token = forge(header("access", alg="none"), claims())
    with caplog.at_level(logging.DEBUG, logger=SECURITY_LOGGER):
        reason_of(jwt_service, "access", token)
    [record] = caplog.records
    assert record.name == SECURITY_LOGGER
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "rejected access token: algorithm_mismatch"
    assert (record.token_type, record.reason) == ("access", "algorithm_mismatch")  # type: ignore[attr-defined]
    assert token not in repr(record.__dict__)


# Byte lengths whose segments end 2 or 3 characters past a quantum.
@pytest.mark.parametrize("length", [1, 2, 32, 64])
def test_a_segment_decodes_only_in_its_one_spelling(length: int) -> None:
    # Every last character over the same leading ones: accepted exactly when it re-encodes to
    # itself, i.e. when the bits it carries past the last byte are clear.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    stem = base64url(bytes(range(7, 7 + length)))[:-1]
    accepted = []
    for last in alphabet:
        segment = stem + last
        decoded = canonical_base64url_decode(segment)
        if decoded is not None:
            accepted.append(last)
            assert base64url(decoded) == segment
        else:
            assert base64url(base64url_decode(segment)) != segment
    assert len(accepted) == (16 if len(stem + "A") % 4 == 3 else 4)
