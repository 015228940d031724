"""The refresh request's walk: extract → verify → rotate in the store → look up the user.

``refresh`` is the whole walk; the built-in route answers with the pair it returns, a guard
hands the user to its route. ``verified_claims`` (extract and verify) is shared with logout.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from auth_refresh._utils import is_active, resolve, user_id_of
from auth_refresh.authentication import TokenPair
from auth_refresh.container import AuthRefreshContainer
from auth_refresh.cookies import CookieTransport, csrf_keys_of
from auth_refresh.exceptions import AuthRefreshError, InvalidTokenError, MissingTokenError
from auth_refresh.rotation import refuse_unjudgeable
from auth_refresh.settings import AuthRefreshSettings

__all__ = ["Refreshed", "cookie_transport", "refresh", "verified_claims"]

security_log = logging.getLogger("auth_refresh.security")


@dataclass(frozen=True)
class Refreshed:
    """A refresh that succeeded: whom the token named, and the pair to answer with."""

    user: Any
    pair: TokenPair | None  # None when not asked for (a guard, without rotation)


async def refresh(
    container: AuthRefreshContainer,
    request: Request,
    cookie_paths: tuple[str, ...],
    *,
    issue: bool = True,
) -> Refreshed:
    """Authenticate ``request`` by its refresh token and make the pair that answers it.

    With rotation the token is consumed in the store and the pair is its successor; without,
    the pair is a new one from the issue service (made only when ``issue``). Raises a 401
    error for any refusal.
    """
    arrived_at: float = container.clock()()
    settings: AuthRefreshSettings = container.settings()
    transport = cookie_transport(container, settings, cookie_paths)
    claims = await verified_claims(container, settings, request, transport)
    subject: str = claims["sub"]
    refuse_unjudgeable(claims, rotation=settings.rotation)
    successor: TokenPair | None = None
    if settings.rotation:
        # Before the user lookup: a replayed token revokes its family whoever it names.
        successor = await container.rotation().rotate(claims, arrived_at=arrived_at)
    user = await resolve(container.user_lookup().by_subject(subject))
    if user is None:
        security_log.info("refresh token refused: unknown subject")
        raise InvalidTokenError(reason="unknown_subject")
    if not is_active(user):
        security_log.info("refresh token refused: inactive user")
        raise InvalidTokenError(reason="inactive_user")
    if successor is None and issue:
        successor = await resolve(container.issuer().response_payload(user_id_of(user)))
    return Refreshed(user, successor)


async def verified_claims(
    container: AuthRefreshContainer,
    settings: AuthRefreshSettings,
    request: Request,
    transport: CookieTransport | None,
) -> Mapping[str, Any]:
    """Extract and verify: no I/O but what custom extractors or verify_token do."""
    if transport is not None:
        transport.refuse_cross_site(request)
    token = await resolve(container.extractor()(request))
    if not isinstance(token, str) or not token:
        raise MissingTokenError()
    verify = settings.verify_token or container.verifier().refresh_token
    try:
        claims = await resolve(verify(token))
    except AuthRefreshError:
        raise
    except Exception as error:
        # The verify_token contract: raising means the token is invalid.
        security_log.info("refresh token refused by verify_token: %s", type(error).__name__)
        raise InvalidTokenError(reason="verify_token_failed") from None
    subject = claims.get("sub") if isinstance(claims, Mapping) else None
    if not isinstance(subject, str) or not subject:
        security_log.info("refresh token refused: no subject")
        raise InvalidTokenError(reason="no_subject")
    if transport is not None and transport.came_from_cookie(request, token):
        # The browser sends the cookie on its own: only the page can add the header.
        # Checked after the signature (no I/O) and before any store step.
        transport.check_csrf(request, token, claims)
    verified: Mapping[str, Any] = claims
    return verified


def cookie_transport(
    container: AuthRefreshContainer, settings: AuthRefreshSettings, cookie_paths: tuple[str, ...]
) -> CookieTransport | None:
    """The cookie transport ``settings`` ask for, or None."""
    if not settings.cookie_transport:
        return None
    return CookieTransport.from_settings(settings, cookie_paths, csrf_keys_of(container))
