"""``LoginIssueTokenService``: the refresh module's side of a login route.

``AuthLocalModule`` beside a refresh registration uses it by default; with rotation each
login's pair is the first of a new token family in the store the refresh route uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from auth_refresh._utils import MaybeAwaitable
from auth_refresh.authentication import TokenPair

if TYPE_CHECKING:
    from auth_refresh.module import AuthRefreshModule

__all__ = ["LoginIssueTokenService"]

# The login request being answered (check_request comes first): its client labels the session.
_login_request: ContextVar[Request | None] = ContextVar("auth_refresh_login", default=None)


class LoginIssueTokenService:
    """The issue service to give a login module (``module.login_issue_token_service``)."""

    # What a login module checks beside a rotating refresh module (tokens with a family).
    starts_token_families = True

    def __init__(self, module: AuthRefreshModule) -> None:
        self.module = module

    def access_token(self, payload: Mapping[str, Any]) -> MaybeAwaitable[str]:
        token: MaybeAwaitable[str] = self.module.container.issuer().access_token(payload)
        return token

    def refresh_token(self, payload: Mapping[str, Any]) -> MaybeAwaitable[str]:
        token: MaybeAwaitable[str] = self.module.container.issuer().refresh_token(payload)
        return token

    async def response_payload(self, user_id: str) -> TokenPair:
        return await self.module.issue_for_subject(user_id, _login_request.get())

    def check_request(self, request: Request) -> None:
        """Refuse a login the refresh module's transport must not answer (cross-site, with
        cookie transport)."""
        _login_request.set(request)
        self.module.check_request(request)

    def describe_route(self, route: APIRoute) -> None:
        """Document ``route``'s answer in the refresh module's transport."""
        self.module.describe_answering_route(route)

    def token_response(self, pair: TokenPair) -> Response:
        """The login answer, in the refresh module's transport (the cookie, when it is on)."""
        return self.module.token_response(pair)
