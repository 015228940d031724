"""The session routes a refresh registration adds with ``sessions_path``: the caller's live
sessions, ending one, ending all others. Authenticated by the access token (``AuthJwtGuard``
of the application's ``AuthJwtModule``); the session the token belongs to is its ``sid``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Path
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from auth_refresh._utils import user_id_of
from auth_refresh.flows.guards import AuthJwtGuard, claims_of
from auth_refresh.flows.refresh import RefreshFlow
from auth_refresh.stores.base import SessionRecord
from auth_refresh.telemetry import operation_span
from auth_refresh.transport.responses import NO_STORE
from auth_refresh.types import SESSION_CLAIM

__all__ = ["SESSION_ID_PATTERN", "SessionBody", "SessionRoutes"]

# A session id is the base64url SHA-256 of its family id (stores.sealing.session_id_of).
SESSION_ID_PATTERN = "^[A-Za-z0-9_-]{43}$"


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
            subject, current = _caller(request, user)
            sessions = await self.flow.list_sessions(subject)
            with_ip = self.flow.container.settings().session_client_ip
            body = [_body(session, current, with_ip) for session in sessions]
            return JSONResponse(body, headers=NO_STORE)

    async def revoke_session(
        self, request: Request, session_id: SessionId, user: Caller
    ) -> Response:
        with operation_span("revoke_session"):
            subject, _ = _caller(request, user)
            await self.flow.revoke_session(subject, session_id)
            return Response(status_code=204, headers=NO_STORE)

    async def revoke_others(self, request: Request, user: Caller) -> Response:
        with operation_span("revoke_other_sessions"):
            subject, current = _caller(request, user)
            await self.flow.revoke_other_sessions(subject, current)
            return Response(status_code=204, headers=NO_STORE)


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
