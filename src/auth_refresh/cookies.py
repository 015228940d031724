"""Cookie transport for browsers: the refresh token in an ``HttpOnly`` cookie, with CSRF.

The refresh token is set as a cookie scripts cannot read, limited to the refresh and logout
paths. Because a browser sends that cookie by itself, a request whose token came from the
cookie must also carry a CSRF token in a header (double submit). The CSRF token is derived
from the refresh token's family (its session), which only the token carries: it cannot be
guessed or replayed across sessions, and it stays the same across rotations, so two tabs
racing a refresh never hold a cookie and a CSRF token that disagree. Without rotation there is
no family, and the token itself is used. It reaches the page in the response body and in a
readable cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from auth_refresh.authentication import TokenPair
from auth_refresh.exceptions import CsrfError
from auth_refresh.responses import NO_STORE
from auth_refresh.rotation import FAMILY_CLAIM, _payload_of
from auth_refresh.settings import AuthRefreshSettings

__all__ = ["CSRF_COOKIE_NAME", "CSRF_HEADER", "CookieTransport", "csrf_token_for"]

security_log = logging.getLogger("auth_refresh.security")

CSRF_HEADER = "X-CSRF-Token"
CSRF_COOKIE_NAME = "csrf_token"
_CSRF_CONTEXT = b"auth-refresh csrf v1\x00"


def csrf_token_for(refresh_token: str, claims: Mapping[str, Any] | None = None) -> str:
    """The CSRF token of ``refresh_token``'s session: unguessable without the token itself.

    ``claims`` are the token's verified claims; without them the token's own payload is read.
    """
    if claims is None:
        claims = _payload_of(refresh_token)
    family = claims.get(FAMILY_CLAIM)
    bound_to = family if isinstance(family, str) and family else refresh_token
    digest = hashlib.sha256(_CSRF_CONTEXT + bound_to.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True)
class CookieTransport:
    """Where and how the refresh token travels when cookie transport is on."""

    cookie_name: str
    paths: Sequence[str]
    secure: bool
    same_site: Literal["strict", "lax", "none"]
    body_refresh_token: bool
    csrf_cookie_name: str = CSRF_COOKIE_NAME
    csrf_header: str = CSRF_HEADER

    @classmethod
    def from_settings(cls, settings: AuthRefreshSettings, paths: Sequence[str]) -> CookieTransport:
        return cls(
            cookie_name=settings.cookie_name,
            paths=tuple(paths),
            secure=settings.cookie_secure,
            same_site=settings.cookie_same_site,
            body_refresh_token=settings.cookie_body_refresh_token,
        )

    def refuse_cross_site(self, request: Request) -> None:
        """Raise ``CsrfError`` for a request the browser says another site made.

        The CSRF token guards the cookie, but a cross-site form can also post a refresh token
        or credentials of the attacker's own in its body: the answer would set the attacker's
        session cookie in the victim's browser (login CSRF). Browsers mark every request with
        ``Sec-Fetch-Site``, which pages cannot set. With ``SameSite=None`` the application is
        meant to be called from other sites, and the check is off.
        """
        if self.same_site != "none" and request.headers.get("sec-fetch-site") == "cross-site":
            security_log.warning("cookie transport: cross-site request refused")
            raise CsrfError("Cross-site requests are refused")

    def came_from_cookie(self, request: Request, token: str) -> bool:
        return request.cookies.get(self.cookie_name) == token

    def check_csrf(self, request: Request, token: str, claims: Mapping[str, Any]) -> None:
        """Raise ``CsrfError`` unless the CSRF header matches the verified ``token``'s."""
        sent = request.headers.get(self.csrf_header)
        if not sent:
            security_log.warning("refresh cookie refused: no CSRF token")
            raise CsrfError("The CSRF token header is missing")
        expected = csrf_token_for(token, claims)
        if not hmac.compare_digest(sent.encode(), expected.encode()):
            security_log.warning("refresh cookie refused: wrong CSRF token")
            raise CsrfError("The CSRF token does not match")

    def token_response(self, pair: TokenPair) -> Response:
        """The token answer: the access token and CSRF token in the body, the refresh cookie."""
        refresh_token = pair["refreshToken"]
        csrf = csrf_token_for(refresh_token)
        body: dict[str, Any] = {"accessToken": pair["accessToken"], "csrfToken": csrf}
        if self.body_refresh_token:
            body["refreshToken"] = refresh_token
        response = JSONResponse(body, headers=NO_STORE)
        max_age = _remaining_life(refresh_token)
        for path in self.paths:
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

    def clear(self, response: Response) -> Response:
        """Delete the refresh and CSRF cookies (logout)."""
        for path in self.paths:
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

    def csrf_parameter(self) -> dict[str, Any]:
        return {
            "in": "header",
            "name": self.csrf_header,
            "required": False,
            "schema": {"type": "string"},
            "description": "Required when the refresh token comes from the cookie: the "
            "csrfToken of the last login or refresh answer (also in the csrf_token cookie)",
        }


def _remaining_life(refresh_token: str) -> int:
    # Our own token, just signed: only its expiry is read back.
    expires_at = _payload_of(refresh_token).get("exp")
    if isinstance(expires_at, int | float) and not isinstance(expires_at, bool):
        return max(0, int(expires_at - time.time()))
    return 0
