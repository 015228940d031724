"""Cookie transport for browsers: the refresh token in an ``HttpOnly`` cookie, with CSRF.

The refresh token is set as a cookie scripts cannot read, limited to the refresh and logout
paths (on ``/``, as the ``__Host-`` prefix requires, with that prefix). Because a browser sends
that cookie by itself, a request whose token came from the cookie must also carry a CSRF token
in a header (double submit). The CSRF token is an HMAC of
the refresh token's family (its session) under a server key derived from the refresh signing
key (or ``AUTH_REFRESH_CSRF_SECRET``): knowing a family id is not enough to make one, it is not
replayable across sessions, and it stays the same across rotations, so two tabs racing a
refresh never hold a cookie and a CSRF token that disagree. Without rotation there is no
family, and the token itself is used. It reaches the page in the response body and in a
readable cookie. Login, refresh and logout also refuse requests from other origins.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from auth_refresh._utils import base64url, origin_of, unverified_claims
from auth_refresh.exceptions import ConfigurationError, CsrfError
from auth_refresh.settings import AuthRefreshSettings
from auth_refresh.tokens.jwt import IssueTokenService
from auth_refresh.tokens.keys import JwtKey, KeyRing
from auth_refresh.transport.responses import NO_STORE
from auth_refresh.types import FAMILY_CLAIM, IssuedPair, TokenPair

__all__ = [
    "CSRF_COOKIE_NAME",
    "CSRF_HEADER",
    "CookieTransport",
    "csrf_keys_of",
    "csrf_token_for",
    "refresh_cookie_name",
]

security_log = logging.getLogger("auth_refresh.security")

CSRF_HEADER = "X-CSRF-Token"
CSRF_COOKIE_NAME = "csrf_token"
HOST_PREFIX = "__Host-"
_CSRF_CONTEXT = b"auth-refresh csrf v2\x00"
_CSRF_KEY_INFO = b"auth-refresh csrf key v1"


def refresh_cookie_name(settings: AuthRefreshSettings) -> str:
    """The refresh cookie's name: ``cookie_name`` after ``cookie_prefix``."""
    return settings.cookie_prefix + settings.cookie_name


def csrf_token_for(
    refresh_token: str, claims: Mapping[str, Any] | None = None, *, key: bytes
) -> str:
    """The CSRF token of ``refresh_token``'s session under ``key`` (see ``csrf_keys_of``).

    ``claims`` are the token's verified claims; without them the token's own payload is read.
    """
    if claims is None:
        claims = unverified_claims(refresh_token)
    family = claims.get(FAMILY_CLAIM)
    bound_to = family if isinstance(family, str) and family else refresh_token
    digest = hmac.new(key, _CSRF_CONTEXT + bound_to.encode(), hashlib.sha256).digest()
    return base64url(digest)


def csrf_keys_of(settings: AuthRefreshSettings, issuer: object) -> tuple[bytes, ...]:
    """The CSRF keys of a registration's settings and issue service; the first makes tokens,
    all check them.

    From ``AUTH_REFRESH_CSRF_SECRET`` when set; otherwise derived from the refresh key ring of
    the default issue service: its signing key first, then every other key with private
    material, so CSRF tokens rotate with the keys and outlive a rotation as long as the old
    key stays in the ring. ``ConfigurationError`` when there is neither.
    """
    if settings.csrf_secret is not None:
        return (_derived_key(settings.csrf_secret.get_secret_value().encode()),)
    if not isinstance(issuer, IssueTokenService):
        raise ConfigurationError(
            "cookie transport with a custom issue service needs AUTH_REFRESH_CSRF_SECRET: "
            "the CSRF token is keyed"
        )
    return _ring_keys(issuer.jwt_service.key_ring("refresh"))


@functools.lru_cache(maxsize=32)
def _ring_keys(ring: KeyRing) -> tuple[bytes, ...]:
    keys = [ring.signing, *(key for key in ring.verification if key is not ring.signing)]
    return tuple(_derived_key(_material(key)) for key in keys if key.can_sign)


def _material(key: JwtKey) -> bytes:
    if key.is_hmac:
        secret: bytes = key.signing_key
        return secret
    der: bytes = key.signing_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return der


@functools.lru_cache(maxsize=32)
def _derived_key(material: bytes) -> bytes:
    # RFC 5869: a key of its own, so a CSRF token never doubles as a token signature.
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_CSRF_KEY_INFO).derive(
        material
    )


@dataclass(frozen=True)
class CookieTransport:
    """Where and how the refresh token travels when cookie transport is on."""

    cookie_name: str
    paths: Sequence[str]
    secure: bool
    same_site: Literal["strict", "lax", "none"]
    body_refresh_token: bool
    csrf_keys: tuple[bytes, ...]
    # None: the request's own origin only.
    allowed_origins: tuple[str, ...] | None = None
    csrf_cookie_name: str = CSRF_COOKIE_NAME
    csrf_header: str = CSRF_HEADER

    @classmethod
    def from_settings(
        cls, settings: AuthRefreshSettings, paths: Sequence[str], csrf_keys: Sequence[bytes]
    ) -> CookieTransport:
        if not csrf_keys:
            raise ConfigurationError("cookie transport needs a CSRF key")
        allowed = settings.allowed_origins
        prefix = settings.cookie_prefix
        return cls(
            cookie_name=refresh_cookie_name(settings),
            # A __Host- cookie must have Path=/ (and no Domain): sent to every path of the host.
            paths=("/",) if prefix == HOST_PREFIX else tuple(paths),
            secure=settings.cookie_secure,
            same_site=settings.cookie_same_site,
            body_refresh_token=settings.cookie_body_refresh_token,
            csrf_keys=tuple(csrf_keys),
            allowed_origins=None if allowed is None else tuple(allowed),
            csrf_cookie_name=prefix + CSRF_COOKIE_NAME,
        )

    def refuse_cross_site(self, request: Request) -> None:
        """Raise ``CsrfError`` for a request another site or origin made.

        The CSRF token guards the cookie, but a cross-site form can also post a refresh token
        or credentials of the attacker's own in its body: the answer would set the attacker's
        session cookie in the victim's browser (login CSRF). Browsers mark every request with
        ``Sec-Fetch-Site``, which pages cannot set; older browsers and some proxies leave it
        out, so ``Origin`` (``Referer`` without it) must also be an allowed origin. A request
        with neither is not a browser's cross-origin post, and passes. With ``SameSite=None``
        the application is meant to be called from other sites: only configured
        ``allowed_origins`` are then checked.
        """
        if self.same_site != "none" and request.headers.get("sec-fetch-site") == "cross-site":
            security_log.warning("cookie transport: cross-site request refused")
            raise CsrfError("Cross-site requests are refused")
        if self.same_site == "none" and self.allowed_origins is None:
            return
        origins = request.headers.getlist("origin")
        if origins:
            origin = origin_of(origins[0]) if len(origins) == 1 else None
        else:
            referers = request.headers.getlist("referer")
            if not referers:
                return
            origin = origin_of(referers[0]) if len(referers) == 1 else None
        allowed = self.allowed_origins
        if allowed is None:
            allowed = (origin_of(f"{request.url.scheme}://{request.url.netloc}") or "",)
        if origin is None or origin not in allowed:
            security_log.warning("cookie transport: request from another origin refused")
            raise CsrfError("Requests from other origins are refused")

    def came_from_cookie(self, request: Request, token: str) -> bool:
        return request.cookies.get(self.cookie_name) == token

    def check_csrf(self, request: Request, token: str, claims: Mapping[str, Any]) -> None:
        """Raise ``CsrfError`` unless the CSRF header matches the verified ``token``'s."""
        sent = request.headers.get(self.csrf_header)
        if not sent:
            security_log.warning("refresh cookie refused: no CSRF token")
            raise CsrfError("The CSRF token header is missing")
        if not any(
            hmac.compare_digest(sent.encode(), csrf_token_for(token, claims, key=key).encode())
            for key in self.csrf_keys
        ):
            security_log.warning("refresh cookie refused: wrong CSRF token")
            raise CsrfError("The CSRF token does not match")

    def token_response(
        self, pair: TokenPair | IssuedPair, paths: Sequence[str] | None = None
    ) -> Response:
        """The token answer: the access token and CSRF token in the body, the refresh cookie.

        The family and expiry an ``IssuedPair`` carries spare reading them back from the token.
        ``paths``, where the routes really are (``transport/paths.py``), replace ``self.paths``.
        """
        issued = pair if isinstance(pair, IssuedPair) else IssuedPair(pair)
        pair = issued.pair
        refresh_token = pair["refreshToken"]
        family = None if issued.family_id is None else {FAMILY_CLAIM: issued.family_id}
        csrf = csrf_token_for(refresh_token, family, key=self.csrf_keys[0])
        body: dict[str, Any] = {"accessToken": pair["accessToken"], "csrfToken": csrf}
        if self.body_refresh_token:
            body["refreshToken"] = refresh_token
        if "tokenType" in pair:
            body["tokenType"] = pair["tokenType"]
        response = JSONResponse(body, headers=NO_STORE)
        max_age = _remaining_life(refresh_token, issued.expires_at)
        for path in self._paths(paths):
            response.set_cookie(
                self.cookie_name,
                refresh_token,
                max_age=max_age,
                path=path,
                secure=self.secure,
                httponly=True,
                samesite=self.same_site,
            )
        # Readable on purpose: the page echoes it in the CSRF header after a reload.
        response.set_cookie(
            self.csrf_cookie_name,
            csrf,
            max_age=max_age,
            path="/",
            secure=self.secure,
            httponly=False,
            samesite=self.same_site,
        )
        return response

    def clear(self, response: Response, paths: Sequence[str] | None = None) -> Response:
        """Delete the refresh and CSRF cookies (logout); ``paths`` as for ``token_response``."""
        for path in self._paths(paths):
            response.delete_cookie(
                self.cookie_name,
                path=path,
                secure=self.secure,
                httponly=True,
                samesite=self.same_site,
            )
        response.delete_cookie(
            self.csrf_cookie_name, path="/", secure=self.secure, samesite=self.same_site
        )
        return response

    def _paths(self, routed: Sequence[str] | None) -> Sequence[str]:
        # A __Host- cookie stays on Path=/ wherever the routes are.
        if routed is None or self.cookie_name.startswith(HOST_PREFIX):
            return self.paths
        return routed

    def csrf_parameter(self) -> dict[str, Any]:
        return {
            "in": "header",
            "name": self.csrf_header,
            "required": False,
            "schema": {"type": "string"},
            "description": "Required when the refresh token comes from the cookie: the "
            "csrfToken of the last login or refresh answer (also in the csrf_token cookie)",
        }


def _remaining_life(refresh_token: str, expires_at: object) -> int:
    if expires_at is None:
        # Our own token, signed earlier: only its expiry is read back.
        expires_at = unverified_claims(refresh_token).get("exp")
    if isinstance(expires_at, int | float) and not isinstance(expires_at, bool):
        return max(0, int(expires_at - time.time()))
    return 0
