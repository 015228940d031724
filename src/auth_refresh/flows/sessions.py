"""The session routes a refresh registration adds with ``sessions_path``: the caller's live
sessions, ending one, ending all others. Authenticated by the access token (``AuthJwtGuard``
of the application's ``AuthJwtModule``); the session the token belongs to is its ``sid``."""

from __future__ import annotations

import binascii
import math
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from auth_refresh._utils import base64url, base64url_decode, user_id_of
from auth_refresh.exceptions import InvalidRequestError
from auth_refresh.flows.guards import AuthJwtGuard, claims_of
from auth_refresh.flows.refresh import RefreshFlow
from auth_refresh.stores.base import SESSION_PAGE_MAX, SessionCursor, SessionRecord
from auth_refresh.stores.sealing import SESSION_ID_FORMAT
from auth_refresh.telemetry import operation_span
from auth_refresh.transport.responses import NO_STORE
from auth_refresh.types import SESSION_CLAIM

__all__ = ["DEFAULT_SESSION_PAGE", "SESSION_PAGE_PARAMETERS", "SessionBody", "SessionRoutes"]

DEFAULT_SESSION_PAGE = 50
# A cursor is base64url of "<created_at>:<session id>"; far longer is not one of ours.
MAX_CURSOR = 400

# The query parameters GET {path} reads, for its OpenAPI operation (read by the handler itself,
# so a bad one is the library's 400, not a framework 422).
SESSION_PAGE_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": "How many sessions to answer",
        "schema": {
            "type": "integer",
            "minimum": 1,
            "maximum": SESSION_PAGE_MAX,
            "default": DEFAULT_SESSION_PAGE,
        },
    },
    {
        "name": "cursor",
        "in": "query",
        "required": False,
        "description": 'Where the page starts: from the previous page\'s Link rel="next"',
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_CURSOR},
    },
]


# The application's access-token guard: its security scheme documents the routes.
Caller = Annotated[Any, Depends(AuthJwtGuard())]


class SessionBody(BaseModel):
    """One live session of the caller: never a token."""

    id: str = Field(description="The session's id, for DELETE")
    createdAt: datetime = Field(description="When its login happened (UTC)")
    lastRefreshedAt: datetime = Field(description="Its last refresh, or its login (UTC)")
    userAgent: str | None = Field(description="The login's User-Agent, at most 256 characters")
    current: bool = Field(description="True on the session of the access token sent")
    clientIp: str | None = Field(
        default=None, description="The login's client IP, only with AUTH_REFRESH_SESSION_CLIENT_IP"
    )


class SessionRoutes:
    """The handlers of ``GET {path}``, ``DELETE {path}/{session_id}`` and
    ``POST {path}/revoke-others`` over one registration's flow."""

    def __init__(self, flow: RefreshFlow) -> None:
        self.flow = flow

    async def list_sessions(self, request: Request, user: Caller) -> Response:
        with operation_span("list_sessions"):
            limit, after = _page_of(request)
            subject, current = _caller(request, user)
            # One more than the page: whether there is a next one.
            sessions = await self.flow.sessions.list_sessions(
                subject, limit=min(limit + 1, SESSION_PAGE_MAX), after=after
            )
            headers = dict(NO_STORE)
            if len(sessions) > limit:
                sessions = sessions[:limit]
                headers["Link"] = _next_link(request, limit, SessionCursor.of(sessions[-1]))
            with_ip = self.flow.container.settings().session_client_ip
            body = [_body(session, current, with_ip) for session in sessions]
            return JSONResponse(body, headers=headers)

    async def revoke_session(self, request: Request, session_id: str, user: Caller) -> Response:
        with operation_span("revoke_session"):
            subject, _ = _caller(request, user)
            await self.flow.sessions.revoke_session(subject, session_id)
            return Response(status_code=204, headers=NO_STORE)

    async def revoke_others(self, request: Request, user: Caller) -> Response:
        with operation_span("revoke_other_sessions"):
            subject, current = _caller(request, user)
            await self.flow.sessions.revoke_other_sessions(subject, current)
            return Response(status_code=204, headers=NO_STORE)


def _page_of(request: Request) -> tuple[int, SessionCursor | None]:
    query = request.query_params
    limit_text = query.get("limit")
    limit = DEFAULT_SESSION_PAGE
    if limit_text is not None:
        if not (limit_text.isascii() and limit_text.isdigit() and len(limit_text) <= 3):
            raise InvalidRequestError(f"limit must be an integer from 1 to {SESSION_PAGE_MAX}")
        limit = int(limit_text)
        if not 1 <= limit <= SESSION_PAGE_MAX:
            raise InvalidRequestError(f"limit must be an integer from 1 to {SESSION_PAGE_MAX}")
    cursor = query.get("cursor")
    return limit, None if cursor is None else _cursor_of(cursor)


def _cursor_of(text: str) -> SessionCursor:
    # A cursor the client altered is a 400; any decoded one is only a position in the list.
    try:
        if len(text) > MAX_CURSOR:
            raise ValueError
        created_at, _, session_id = base64url_decode(text).decode("ascii").partition(":")
        created = float(created_at)
        if not math.isfinite(created) or SESSION_ID_FORMAT.fullmatch(session_id) is None:
            raise ValueError
    except (ValueError, binascii.Error, UnicodeError):
        raise InvalidRequestError("cursor is not one this server gave") from None
    return SessionCursor(created, session_id)


def _next_link(request: Request, limit: int, last: SessionCursor) -> str:
    cursor = base64url(f"{last.created_at!r}:{last.session_id}".encode("ascii"))
    url = request.url.replace_query_params(limit=limit, cursor=cursor)
    return f'<{url}>; rel="next"'


def _caller(request: Request, user: Any) -> tuple[str, str | None]:
    # The access token's claims, as the guard verified them; a guard replaced in a test
    # (dependency_overrides) leaves none: the user's id, and no current session.
    claims = claims_of(request)
    if claims is None:
        return user_id_of(user), None
    session_id = claims.get(SESSION_CLAIM)
    return str(claims["sub"]), session_id if isinstance(session_id, str) else None


def _body(session: SessionRecord, current: str | None, with_ip: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": session.session_id,
        "createdAt": _iso(session.created_at),
        "lastRefreshedAt": _iso(session.last_refreshed_at),
        "userAgent": session.user_agent,
        "current": session.session_id == current,
    }
    if with_ip:
        body["clientIp"] = session.client_ip
    return body


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")
