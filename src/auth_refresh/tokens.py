"""Signing and verifying access and refresh tokens (the ``JwtModule`` companion).

Each token says what it is in its JOSE ``typ`` header (RFC 8725 §3.11): ``at+jwt`` for access
tokens (RFC 9068) and ``rt+jwt`` for refresh tokens. Verification checks the type whatever the
keys, so one shared secret never makes the two interchangeable.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from auth_refresh.exceptions import InvalidTokenError
from auth_refresh.settings import JwtSettings, build_settings

__all__ = ["JwtKey", "JwtModule", "JwtService", "KeyRing", "TokenType"]

TokenType = Literal["access", "refresh"]

TOKEN_MEDIA_TYPES: dict[TokenType, str] = {"access": "at+jwt", "refresh": "rt+jwt"}
REQUIRED_CLAIMS = ("exp", "iat", "sub", "jti")
TIME_CLAIMS = ("exp", "iat", "nbf")
# Latest instant JSON numbers may name here: 9999-12-31T23:59:59Z.
LATEST_TIMESTAMP = 253_402_300_799
# 16 random bytes: 128 bits, 22 characters of base64url.
JTI_BYTES = 16

security_log = logging.getLogger("auth_refresh.security")


@dataclass(frozen=True)
class JwtKey:
    """One key with the one algorithm it may be used with (RFC 8725 §3.1)."""

    algorithm: str
    signing_key: Any
    verification_key: Any
    kid: str | None = None

    @classmethod
    def from_secret(cls, secret: str | bytes, algorithm: str, kid: str | None = None) -> JwtKey:
        return cls(algorithm, secret, secret, kid)


@dataclass(frozen=True)
class KeyRing:
    """The keys of one token type: one signs, every one of them verifies."""

    signing: JwtKey
    verification: tuple[JwtKey, ...] = ()

    def __post_init__(self) -> None:
        if self.signing not in self.verification:
            object.__setattr__(self, "verification", (self.signing, *self.verification))

    def find(self, kid: object) -> JwtKey | None:
        for key in self.verification:
            if key.kid == kid:
                return key
        return None


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
        self._rings: dict[TokenType, KeyRing] = {
            "access": _ring_from_secret(settings.access_secret, settings),
            "refresh": _ring_from_secret(settings.refresh_secret, settings),
        }
        self._lifetimes: dict[TokenType, int] = {
            "access": settings.access_expires_in,
            "refresh": settings.refresh_expires_in,
        }

    def sign(self, token_type: TokenType, claims: Mapping[str, Any]) -> str:
        """A token of ``token_type`` carrying ``claims``; ``sub`` is required."""
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise ValueError("a token needs a non-empty string 'sub' claim")
        now = int(self._clock())
        payload = dict(claims)
        payload.update(
            iat=now,
            exp=now + self._lifetimes[token_type],
            jti=secrets.token_urlsafe(JTI_BYTES),
        )
        if self.settings.issuer is not None:
            payload["iss"] = self.settings.issuer
        if self.settings.audience is not None:
            payload["aud"] = self.settings.audience
        key = self._rings[token_type].signing
        headers = {"typ": TOKEN_MEDIA_TYPES[token_type]}
        if key.kid is not None:
            headers["kid"] = key.kid
        return jwt.encode(payload, key.signing_key, algorithm=key.algorithm, headers=headers)

    def verify(self, token_type: TokenType, token: object) -> dict[str, Any]:
        """The claims of ``token``; ``InvalidTokenError`` unless it is a valid ``token_type``."""
        if not isinstance(token, str) or not token:
            raise _refuse(token_type, "not_a_string")
        # Refuse oversized input before any base64 or JSON work.
        if len(token) > self.settings.max_token_bytes:
            raise _refuse(token_type, "too_large")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _refuse(token_type, "malformed") from None
        # No extension is understood, so every critical one must be refused (RFC 7515 §4.1.11).
        if "crit" in header or "b64" in header:
            raise _refuse(token_type, "critical_header")
        key = self._rings[token_type].find(header.get("kid"))
        if key is None:
            raise _refuse(token_type, "unknown_key")
        if header.get("alg") != key.algorithm:
            raise _refuse(token_type, "algorithm_mismatch")
        if _media_type(header.get("typ")) != TOKEN_MEDIA_TYPES[token_type]:
            raise _refuse(token_type, "wrong_type")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.verification_key,
                algorithms=[key.algorithm],
                options={"require": list(REQUIRED_CLAIMS)},
                leeway=self.settings.leeway,
                issuer=self.settings.issuer,
                audience=self.settings.audience,
            )
        except jwt.ExpiredSignatureError:
            raise _refuse(token_type, "expired") from None
        except jwt.InvalidSignatureError:
            raise _refuse(token_type, "bad_signature") from None
        except jwt.PyJWTError:
            raise _refuse(token_type, "invalid_claims") from None
        _check_claim_types(token_type, claims, self._clock() + self.settings.leeway)
        return claims


class JwtModule:
    """The JWT companion: settings from ``JWT_MODULE_*`` merged under those given in code."""

    def __init__(self, service: JwtService) -> None:
        self.service = service
        self.settings = service.settings

    @classmethod
    def for_root(cls, settings: JwtSettings | Mapping[str, Any] | None = None) -> JwtModule:
        return cls(JwtService(build_settings(JwtSettings, settings)))


def _ring_from_secret(secret: Any, settings: JwtSettings) -> KeyRing:
    return KeyRing(JwtKey.from_secret(secret.get_secret_value(), settings.algorithm))


def _media_type(typ: object) -> str | None:
    # RFC 7515 §4.1.9: "application/" may be omitted and the comparison ignores case.
    if not isinstance(typ, str):
        return None
    typ = typ.lower()
    return typ.removeprefix("application/")


def _check_claim_types(token_type: TokenType, claims: Mapping[str, Any], latest_iat: float) -> None:
    # PyJWT accepts any int()-able value ("123", True); the JWT spec wants JSON numbers.
    for name in TIME_CLAIMS:
        if name in claims and not _is_timestamp(claims[name]):
            raise _refuse(token_type, "invalid_claims")
    if claims["iat"] > latest_iat:
        raise _refuse(token_type, "issued_in_future")
    for name in ("sub", "jti"):
        value = claims[name]
        if not isinstance(value, str) or not value or len(value) > 1024:
            raise _refuse(token_type, "invalid_claims")


def _is_timestamp(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and 0 <= value <= LATEST_TIMESTAMP


def _refuse(token_type: TokenType, reason: str) -> InvalidTokenError:
    # Never log the token: only what was wrong with it.
    security_log.info("rejected %s token: %s", token_type, reason)
    return InvalidTokenError(reason=reason)
