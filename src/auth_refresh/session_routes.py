"""The session routes a refresh registration adds with ``sessions_path``: the caller's live
sessions, ending one, ending all others. Authenticated by the access token (``AuthJwtGuard``
of the application's ``AuthJwtModule``); the session the token belongs to is its ``sid``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from auth_refresh._utils import user_id_of
from auth_refresh.auth_jwt import AuthJwtGuard, claims_of
from auth_refresh.responses import NO_STORE, error_responses
from auth_refresh.rotation import SESSION_CLAIM
from auth_refresh.store import SessionRecord
from auth_refresh.telemetry import operation_span

if TYPE_CHECKING:
    from auth_refresh.module import AuthRefreshModule

__all__ = ["SessionBody", "add_session_routes"]


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


def add_session_routes(router: APIRouter, module: AuthRefreshModule, path: str) -> None:
    """``GET {path}``, ``DELETE {path}/{session_id}`` and ``POST {path}/revoke-others``."""
    from auth_refresh.routing import operation_id

    async def list_sessions(request: Request, user: Caller) -> Response:
        with operation_span("list_sessions"):
            subject, current = _caller(request, user)
            sessions = await module.list_sessions(subject)
            with_ip = module.container.settings().session_client_ip
            body = [_body(session, current, with_ip) for session in sessions]
            return JSONResponse(body, headers=NO_STORE)

    async def revoke_session(request: Request, session_id: str, user: Caller) -> Response:
        with operation_span("revoke_session"):
            subject, _ = _caller(request, user)
            await module.revoke_session(subject, session_id)
            return Response(status_code=204, headers=NO_STORE)

    async def revoke_others(request: Request, user: Caller) -> Response:
        with operation_span("revoke_other_sessions"):
            subject, current = _caller(request, user)
            await module.revoke_other_sessions(subject, current)
            return Response(status_code=204, headers=NO_STORE)

    router.add_api_route(
        path,
        list_sessions,
        methods=["GET"],
        summary="The caller's live sessions, newest first",
        operation_id=operation_id("list_sessions", path),
        responses={
            200: {"model": list[SessionBody], "description": "The live sessions"},
            **error_responses(401, 503),
        },
    )
    router.add_api_route(
        path + "/{session_id}",
        revoke_session,
        methods=["DELETE"],
        status_code=204,
        summary="End one of the caller's sessions: its refresh and access tokens stop working",
        operation_id=operation_id("revoke_session", path),
        responses={
            204: {"description": "The session is revoked"},
            **error_responses(401, 404, 503),
        },
    )
    router.add_api_route(
        path + "/revoke-others",
        revoke_others,
        methods=["POST"],
        status_code=204,
        summary="End every session of the caller except the current one",
        operation_id=operation_id("revoke_other_sessions", path),
        responses={
            204: {"description": "Every other session is revoked"},
            **error_responses(401, 503),
        },
    )


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
