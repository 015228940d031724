"""Signing and verifying access and refresh tokens, and the issue and verify services over it.

Each token says what it is in its JOSE ``typ`` header (RFC 8725 §3.11): ``at+jwt`` for access
tokens (RFC 9068) and ``rt+jwt`` for refresh tokens. Verification checks the type whatever the
keys, so one shared secret never makes the two interchangeable.

The compact serialization is parsed here, strictly, rather than by a JWT library: every check
below happens in one place, in a fixed order, before the claims are trusted, and a token that
fails any of them costs no I/O.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from auth_refresh._utils import (
    MAX_JSON_DEPTH,
    base64url,
    base64url_decode,
    canonical_base64url_decode,
    strict_json_object,
)
from auth_refresh.exceptions import InvalidTokenError
from auth_refresh.settings import JwtSettings
from auth_refresh.tokens.key_settings import key_rings_from_settings
from auth_refresh.tokens.keys import JwtKey, KeyRing
from auth_refresh.types import TokenPair, TokenType

__all__ = [
    "IssueTokenService",
    "JwtService",
    "VerifyTokenService",
    "new_token_id",
]

TOKEN_MEDIA_TYPES: dict[TokenType, str] = {"access": "at+jwt", "refresh": "rt+jwt"}
REQUIRED_CLAIMS = ("exp", "iat", "sub", "jti")
TIME_CLAIMS = ("exp", "iat", "nbf")
# Latest instant a time claim may name: 9999-12-31T23:59:59Z.
LATEST_TIMESTAMP = 253_402_300_799
# 16 random bytes: 128 bits, 22 characters of base64url.
JTI_BYTES = 16
MINIMUM_JTI_LENGTH = 22
MAXIMUM_ID_LENGTH = 1024
# A critical extension must be understood or the token refused (RFC 7515 §4.1.11); none is.
CRITICAL_HEADERS = frozenset({"crit", "b64"})
# Header parameters that point at a key: keys come only from the ring (RFC 8725 §3.10).
KEY_REFERENCE_HEADERS = frozenset({"jku", "jwk", "x5u", "x5c"})

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")

security_log = logging.getLogger("auth_refresh.security")


def new_token_id() -> str:
    """A fresh ``jti``: 128 random bits, base64url."""
    return base64url(os.urandom(JTI_BYTES))


class JwtService:
    """Signs and verifies tokens of both types with their own key rings."""

    def __init__(
        self,
        settings: JwtSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._clock = clock
        # Keys are parsed and checked once, here: a bad key fails at startup.
        self._rings = key_rings_from_settings(settings)
        self._lifetimes: dict[TokenType, int] = {
            "access": settings.access_expires_in,
            "refresh": settings.refresh_expires_in,
        }
        # The JOSE header is the same for every token of a type: encoded once, with its key.
        self._signers: dict[TokenType, tuple[JwtKey, str]] = {
            token_type: (ring.signing, _encoded_header(ring.signing, token_type))
            for token_type, ring in self._rings.items()
        }
        # The headers this service writes, as written: a token carrying one of them letter for
        # letter needs no header parsing to find its key (any other goes the whole way).
        self._own_headers: dict[TokenType, dict[str, JwtKey]] = {
            token_type: {
                _encoded_header(key, token_type): key for key in ring.verification if key.can_sign
            }
            for token_type, ring in self._rings.items()
        }

    def key_ring(self, token_type: TokenType) -> KeyRing:
        return self._rings[token_type]

    def sign(self, token_type: TokenType, claims: Mapping[str, Any]) -> str:
        """A token of ``token_type`` carrying ``claims`` (see ``signed``)."""
        return self.signed(token_type, claims)[0]

    def signed(
        self, token_type: TokenType, claims: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """A token of ``token_type`` carrying ``claims``, and the claims it carries; ``sub`` is
        required.

        The service sets ``iat``, ``exp`` (now plus the type's lifetime; a given ``exp`` may
        only shorten it), ``jti`` (random unless given: at least 22 characters), and ``iss``
        and ``aud`` when configured. ``ValueError`` for claims ``verify`` would refuse.
        """
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject or len(subject) > MAXIMUM_ID_LENGTH:
            raise ValueError("a token needs a non-empty string 'sub' claim")
        if "iat" in claims:
            raise ValueError("'iat' is set by the service")
        now = int(self._clock())
        payload = dict(claims)
        expires = now + self._lifetimes[token_type]
        if "exp" in claims:
            if not _is_timestamp(claims["exp"]):
                raise ValueError("'exp' must be a NumericDate")
            expires = min(expires, claims["exp"])
        if "nbf" in claims and not _is_timestamp(claims["nbf"]):
            raise ValueError("'nbf' must be a NumericDate")
        token_id = claims.get("jti", None)
        if token_id is None:
            token_id = new_token_id()
        elif not _is_token_id(token_id):
            raise ValueError(
                f"'jti' must be a string of {MINIMUM_JTI_LENGTH} to {MAXIMUM_ID_LENGTH} characters"
            )
        payload.update(iat=now, exp=expires, jti=token_id)
        for name, configured in (("iss", self.settings.issuer), ("aud", self.settings.audience)):
            if configured is not None:
                if payload.get(name, configured) != configured:
                    raise ValueError(f"'{name}' is set by the service")
                payload[name] = configured
        if "aud" in payload and self.settings.audience is None:
            raise ValueError("'aud' needs JWT_MODULE_AUDIENCE: tokens with an audience are refused")
        key, encoded_header = self._signers[token_type]
        payload_json = _CLAIMS_ENCODER.encode(payload)
        # Read back as verify will: only claims that are not plain can be refused there.
        if (
            not _plain_claims(payload, payload_json)
            and strict_json_object(payload_json.encode()) is None
        ):
            raise ValueError(
                f"the claims must be Unicode text nested at most {MAX_JSON_DEPTH} levels deep"
            )
        signing_input = encoded_header + "." + base64url(payload_json.encode())
        token = signing_input + "." + base64url(key.sign(signing_input.encode("ascii")))
        if len(token) > self.settings.max_token_bytes:
            raise ValueError("the token would be longer than JWT_MODULE_MAX_TOKEN_BYTES")
        return token, payload

    def verify(self, token_type: TokenType, token: object) -> dict[str, Any]:
        """The claims of ``token``; ``InvalidTokenError`` unless it is a valid ``token_type``.

        Checks, in order: size (before any decoding), compact form and base64url, header
        (UTF-8 JSON object, no duplicate members, no critical or key-reference parameters),
        the key its ``kid`` names and that key's one algorithm, ``typ``, the signature, then the
        claims. Nothing here does I/O.
        """
        if not isinstance(token, str) or not token:
            raise _refuse(token_type, "malformed")
        # Refuse oversized input before any base64 or JSON work.
        if len(token) > self.settings.max_token_bytes:
            raise _refuse(token_type, "too_large")
        parts = token.split(".")
        if not token.isascii() or len(parts) != 3:
            raise _refuse(token_type, "malformed")
        encoded_header, encoded_payload, encoded_signature = parts
        signature = canonical_base64url_decode(encoded_signature)
        if signature is None or not _BASE64URL.fullmatch(encoded_payload):
            raise _refuse(token_type, "malformed")
        key = self._own_headers[token_type].get(encoded_header)
        if key is None:
            key = self._key_of_header(token_type, encoded_header)
        signing_input = f"{encoded_header}.{encoded_payload}".encode("ascii")
        if not signature or not key.verifies(signing_input, signature):
            raise _refuse(token_type, "bad_signature")
        try:
            # Signed as it is spelt: the payload need not be canonical base64url, only base64url.
            claims = strict_json_object(base64url_decode(encoded_payload))
        except ValueError:
            claims = None
        if claims is None:
            raise _refuse(token_type, "malformed")
        self._check_claims(token_type, claims)
        return claims

    def _key_of_header(self, token_type: TokenType, encoded_header: str) -> JwtKey:
        # The key a header names, once it passed every check; InvalidTokenError otherwise.
        header_bytes = canonical_base64url_decode(encoded_header)
        header = strict_json_object(header_bytes) if header_bytes is not None else None
        if header is None:
            raise _refuse(token_type, "malformed")
        if not CRITICAL_HEADERS.isdisjoint(header):
            raise _refuse(token_type, "critical_header")
        if not KEY_REFERENCE_HEADERS.isdisjoint(header):
            raise _refuse(token_type, "key_reference_header")
        # A kid is a string (RFC 7515 §4.1.4), even null is refused; it only names ring keys.
        kid = header.get("kid")
        if "kid" in header and not isinstance(kid, str):
            raise _refuse(token_type, "unknown_key")
        key = self._rings[token_type].find(kid)
        if key is None:
            raise _refuse(token_type, "unknown_key")
        # Exact and case-sensitive (RFC 7515 §4.1.1): "none", "None", "HS256 " all differ.
        if header.get("alg") != key.algorithm:
            raise _refuse(token_type, "algorithm_mismatch")
        if _media_type(header.get("typ")) != TOKEN_MEDIA_TYPES[token_type]:
            raise _refuse(token_type, "wrong_type")
        return key

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public keys of the access ring as a JWK Set (RFC 7517 §5); never a secret.

        Refresh keys are left out: only this service verifies refresh tokens, and a resource
        server that trusted them could be handed a refresh token as an access token.
        """
        return {"keys": self._rings["access"].public_jwks()}

    def _check_claims(self, token_type: TokenType, claims: Mapping[str, Any]) -> None:
        missing = [name for name in REQUIRED_CLAIMS if name not in claims]
        if missing:
            raise _refuse(token_type, "missing_claim")
        # RFC 7519 §2: NumericDate is a JSON number; no strings, booleans, NaN or year 10000.
        for name in TIME_CLAIMS:
            if name in claims and not _is_timestamp(claims[name]):
                raise _refuse(token_type, "invalid_claim")
        if not _is_identifier(claims["sub"]) or not _is_token_id(claims["jti"]):
            raise _refuse(token_type, "invalid_claim")
        now = self._clock()
        leeway = self.settings.leeway
        if now >= claims["exp"] + leeway:
            raise _refuse(token_type, "expired")
        if "nbf" in claims and claims["nbf"] > now + leeway:
            raise _refuse(token_type, "not_yet_valid")
        if claims["iat"] > now + leeway:
            raise _refuse(token_type, "issued_in_future")
        issuer = self.settings.issuer
        if issuer is not None and claims.get("iss") != issuer:
            raise _refuse(token_type, "wrong_issuer")
        if not _audience_matches(claims.get("aud", _NO_AUDIENCE), self.settings.audience):
            raise _refuse(token_type, "wrong_audience")


class IssueTokenService:
    """Issues typed access and refresh tokens with the ``JwtService``."""

    def __init__(self, jwt_service: JwtService) -> None:
        self.jwt_service = jwt_service

    def access_token(self, payload: Mapping[str, Any]) -> str:
        return self.jwt_service.sign("access", payload)

    def refresh_token(self, payload: Mapping[str, Any]) -> str:
        return self.jwt_service.sign("refresh", payload)

    def signed_refresh_token(self, payload: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """A refresh token and the claims it carries (its ``jti`` and ``exp``, for rotation)."""
        return self.jwt_service.signed("refresh", payload)

    def response_payload(self, user_id: str) -> TokenPair:
        claims = {"sub": user_id}
        return {
            "accessToken": self.access_token(claims),
            "refreshToken": self.refresh_token(claims),
        }


class VerifyTokenService:
    """Verifies access and refresh tokens with the ``JwtService``."""

    def __init__(self, jwt_service: JwtService) -> None:
        self.jwt_service = jwt_service

    def access_token(self, token: str) -> dict[str, Any]:
        return self.jwt_service.verify("access", token)

    def refresh_token(self, token: str) -> dict[str, Any]:
        return self.jwt_service.verify("refresh", token)


_CLAIMS_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_PLAIN_SCALARS = frozenset({str, int, float, bool, type(None)})
_NAMES = frozenset({str})


def _encoded_header(key: JwtKey, token_type: TokenType) -> str:
    header = {"alg": key.algorithm, "typ": TOKEN_MEDIA_TYPES[token_type]}
    if key.kid is not None:
        header["kid"] = key.kid
    return base64url(json.dumps(header, separators=(",", ":")).encode())


def _plain_claims(claims: Mapping[str, Any], encoded: str) -> bool:
    """Whether ``claims`` read back from their JSON ``encoded`` unchanged and acceptable, by
    construction: string names, exact built-in scalars or objects of them (``cnf``), and no
    ``\\u`` escape in the (ASCII) JSON, so no lone surrogate. Anything else is read back."""
    if "\\u" in encoded:
        return False
    # Most claims are names and scalars only: two passes in C, no generator.
    if _NAMES.issuperset(map(type, claims)) and _PLAIN_SCALARS.issuperset(
        map(type, claims.values())
    ):
        return True
    return all(
        type(name) is str and (type(value) in _PLAIN_SCALARS or _plain_object(value))
        for name, value in claims.items()
    )


def _plain_object(value: object) -> bool:
    # One level of nesting, as cnf's {"jkt": ...}: a dict of string names and exact scalars.
    return type(value) is dict and all(
        type(name) is str and type(member) in _PLAIN_SCALARS for name, member in value.items()
    )


def _media_type(typ: object) -> str | None:
    # RFC 7515 §4.1.9: "application/" may be omitted and the comparison ignores case.
    if not isinstance(typ, str):
        return None
    return typ.lower().removeprefix("application/")


def _is_timestamp(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, int):
        # Compared as an int: one too large for a float must not raise OverflowError.
        return 0 <= value <= LATEST_TIMESTAMP
    return math.isfinite(value) and 0 <= value <= LATEST_TIMESTAMP


def _is_identifier(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAXIMUM_ID_LENGTH


def _is_token_id(value: object) -> bool:
    return isinstance(value, str) and MINIMUM_JTI_LENGTH <= len(value) <= MAXIMUM_ID_LENGTH


_NO_AUDIENCE = object()


def _audience_matches(audience: object, configured: str | None) -> bool:
    # RFC 7519 §4.1.3: with an "aud" the service must find itself in it, by exact comparison.
    # Without a configured audience, any "aud" (null and [] included) is refused.
    if configured is None:
        return audience is _NO_AUDIENCE
    if isinstance(audience, str):
        return audience == configured
    return isinstance(audience, list) and configured in audience


def _refuse(token_type: TokenType, reason: str) -> InvalidTokenError:
    # Never log the token, nor anything read from it: only what was wrong with it.
    level = logging.INFO if reason == "expired" else logging.WARNING
    security_log.log(
        level,
        "rejected %s token: %s",
        token_type,
        reason,
        extra={"token_type": token_type, "reason": reason},
    )
    return InvalidTokenError(reason=reason)
