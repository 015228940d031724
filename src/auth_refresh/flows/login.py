"""``LoginIssueTokenService``: the refresh registration's side of a login route.

``AuthLocalModule`` beside a refresh registration uses it by default; with rotation each
login's pair is the first of a new token family in the store the refresh route uses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from auth_refresh._utils import MaybeAwaitable
from auth_refresh.flows.refresh import RefreshFlow
from auth_refresh.types import TokenPair

__all__ = ["LoginIssueTokenService"]

# The login request being answered (check_request comes first): its client labels the session.
_login_request: ContextVar[Request | None] = ContextVar("auth_refresh_login", default=None)


class LoginIssueTokenService:
    """The issue service to give a login module (``module.login_issue_token_service``).

    ``describe_route`` is the registration's: it documents the login route's answer."""

    # What a login module checks beside a rotating refresh module (tokens with a family).
    starts_token_families = True

    def __init__(self, flow: RefreshFlow, describe_route: Callable[[APIRoute], None]) -> None:
        self.flow = flow
        self.describe_route = describe_route

    def access_token(self, payload: Mapping[str, Any]) -> MaybeAwaitable[str]:
        token: MaybeAwaitable[str] = self.flow.container.issuer().access_token(payload)
        return token

    def refresh_token(self, payload: Mapping[str, Any]) -> MaybeAwaitable[str]:
        token: MaybeAwaitable[str] = self.flow.container.issuer().refresh_token(payload)
        return token

    async def response_payload(self, user_id: str) -> TokenPair:
        return await self.flow.issue_for_subject(user_id, _login_request.get())

    def check_request(self, request: Request) -> None:
        """Refuse a login the refresh registration's transport must not answer (cross-site,
        with cookie transport)."""
        _login_request.set(request)
        self.flow.check_request(request)

    def token_response(self, pair: TokenPair) -> Response:
        """The login answer, in the refresh registration's transport (the cookie, when on)."""
        return self.flow.token_response(pair)
