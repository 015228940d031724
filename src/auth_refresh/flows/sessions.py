"""The session routes a refresh registration adds with ``sessions_path``: the caller's live
sessions, ending one, ending all others. Authenticated by the access token (``AuthJwtGuard``
of the application's ``AuthJwtModule``); the session the token belongs to is its ``sid``."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Path
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from auth_refresh._utils import user_id_of
from auth_refresh.exceptions import InvalidRequestError
from auth_refresh.flows.guards import AuthJwtGuard, claims_of
from auth_refresh.flows.refresh import RefreshFlow
from auth_refresh.stores.base import SESSION_PAGE_MAX, SessionCursor, SessionRecord
from auth_refresh.stores.sealing import SESSION_ID_FORMAT
from auth_refresh.telemetry import operation_span
from auth_refresh.transport.responses import NO_STORE
from auth_refresh.types import SESSION_CLAIM

__all__ = [
    "DEFAULT_SESSION_PAGE",
    "SESSION_ID_PATTERN",
    "SESSION_PAGE_PARAMETERS",
    "SessionBody",
    "SessionRoutes",
]

# A session id is the base64url SHA-256 of its family id (stores.sealing.session_id_of).
SESSION_ID_PATTERN = "^[A-Za-z0-9_-]{43}$"

DEFAULT_SESSION_PAGE = 50
# A cursor is "<created_at>~<session id>", the last session of the page before: every string
# of this form is a position in the list (what the schema says is what is accepted).
CURSOR_FORMAT = r"(\d{1,20}(?:\.\d{1,20})?)~(" + SESSION_ID_FORMAT.pattern + ")"
_cursor_format = re.compile(CURSOR_FORMAT)

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
        "schema": {"type": "string", "pattern": f"^{CURSOR_FORMAT}$"},
    },
]


# The application's access-token guard: its security scheme documents the routes.
Caller = Annotated[Any, Depends(AuthJwtGuard())]
# Documented, not validated: any other id is a session that is not found (404), as it is.
SessionId = Annotated[
    str,
    Path(
        description="The session's id, from the session list",
        json_schema_extra={"pattern": SESSION_ID_PATTERN},
    ),
]


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
            sessions, more = await self.flow.sessions.page(subject, limit=limit, after=after)
            headers = dict(NO_STORE)
            if more:
                headers["Link"] = _next_link(request, limit, SessionCursor.of(sessions[-1]))
            with_ip = self.flow.container.settings().session_client_ip
            body = [_body(session, current, with_ip) for session in sessions]
            return JSONResponse(body, headers=headers)

    async def revoke_session(
        self, request: Request, session_id: SessionId, user: Caller
    ) -> Response:
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
    found = _cursor_format.fullmatch(text)
    if found is None:
        raise InvalidRequestError("cursor is not one this server gave")
    return SessionCursor(float(found[1]), found[2])


def _next_link(request: Request, limit: int, last: SessionCursor) -> str:
    cursor = f"{last.created_at!r}~{last.session_id}"
    url = request.url
    # As the client sees it: an application's own root_path (behind a proxy that strips it)
    # is not in the request's path.
    root_path = request.scope.get("root_path", "")
    if root_path and not url.path.startswith(root_path):
        url = url.replace(path=root_path + url.path)
    url = url.replace_query_params(limit=limit, cursor=cursor)
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
