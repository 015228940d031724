"""The built-in routes of a refresh registration: ``POST /auth/refresh`` and, when asked for,
``POST /auth/logout`` and the session routes; their handlers are the flows'."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from enum import Enum
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.convertors import StringConvertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response

from auth_refresh.flows.readiness import readiness_response
from auth_refresh.flows.refresh import RefreshFlow
from auth_refresh.flows.sessions import SESSION_PAGE_PARAMETERS, SessionBody, SessionRoutes
from auth_refresh.registration.options import Routes
from auth_refresh.transport.extractors import DEFAULT_EXTRACTOR
from auth_refresh.transport.responses import TokenPairBody, error_responses
from auth_refresh.transport.schemes import source_of

__all__ = ["add_refresh_routes", "add_session_routes", "operation_id", "refresh_router"]

Lifespan = Callable[[Any], AbstractAsyncContextManager[None]]

REVOKE_OTHERS = "revoke-others"
# On each route, not on a router: attach adds the routes to the application's own router.
TAGS: list[str | Enum] = ["auth"]


class _SessionIdConvertor(StringConvertor):
    # Any segment but the literal sibling route's: DELETE {path}/revoke-others is then a 405
    # naming POST, as the schema says, not a session that is not found.
    regex = f"(?!{REVOKE_OTHERS}$)[^/]+"


_SESSION_ID_CONVERTOR = "auth_refresh_session_id"
register_url_convertor(_SESSION_ID_CONVERTOR, _SessionIdConvertor())


def operation_id(method: str, path: str) -> str:
    return method + "_" + re.sub(r"\W+", "_", path).strip("_")


def refresh_router(
    flow: RefreshFlow, lifespan: Lifespan, names: tuple[str, str], routes: Routes
) -> tuple[APIRouter, list[APIRoute]]:
    """A registration's router (``lifespan`` starts it), and its refresh-token routes (see
    ``add_refresh_routes``)."""
    router = APIRouter(lifespan=lifespan)
    return router, add_refresh_routes(router, flow, names, routes)


def add_refresh_routes(
    router: APIRouter, flow: RefreshFlow, names: tuple[str, str], routes: Routes
) -> list[APIRoute]:
    """Add a registration's routes to ``router``; its refresh-token routes, whose OpenAPI is
    completed at startup, when the extractor is known. The handlers are ``flow``'s; ``names``
    name the refresh and logout routes."""
    described, _ = source_of(DEFAULT_EXTRACTOR)
    first = len(router.routes)
    path, logout_path, sessions_path = routes.path, routes.logout_path, routes.sessions_path
    if routes.controllers:
        router.add_api_route(
            path,
            flow.refresh_route,
            methods=["POST"],
            tags=TAGS,
            name=names[0],
            summary="Exchange a refresh token for a new access and refresh token",
            operation_id=operation_id("refresh", path),
            responses={
                200: {"model": TokenPairBody, "description": "A new token pair"},
                **error_responses(400, 401, 413, 503),
            },
            openapi_extra=described,
        )
    if logout_path is not None:
        router.add_api_route(
            logout_path,
            flow.logout_route,
            methods=["POST"],
            tags=TAGS,
            name=names[1],
            status_code=204,
            summary="Log out: revoke the refresh token's family (this session's tokens)",
            operation_id=operation_id("logout", logout_path),
            responses={
                204: {"description": "The session's refresh tokens are revoked"},
                **error_responses(400, 401, 413, 503),
            },
            openapi_extra=described,
        )
    # The refresh token's routes, documented at startup; the session routes take an access token.
    token_routes = [route for route in router.routes[first:] if isinstance(route, APIRoute)]
    if sessions_path is not None:
        add_session_routes(router, SessionRoutes(flow), sessions_path)
    if routes.readiness_path is not None:

        async def readiness(request: Request) -> Response:
            return readiness_response(await flow.readiness(request))

        router.add_api_route(
            routes.readiness_path,
            readiness,
            methods=["GET"],
            tags=TAGS,
            summary="Ready to serve: the token store answers and holds this release's schema",
            operation_id=operation_id("readiness", routes.readiness_path),
            responses={
                200: {"description": 'Ready: {"status": "ready"}'},
                503: {"description": 'Not ready: {"status": "unavailable", "reason": "..."}'},
            },
        )
    return token_routes


def add_session_routes(router: APIRouter, handlers: SessionRoutes, path: str) -> None:
    """``GET {path}``, ``POST {path}/revoke-others`` and ``DELETE {path}/{session_id}``: the
    literal path first, and no session id that is it, so its 405 says ``Allow: POST``."""
    router.add_api_route(
        path,
        handlers.list_sessions,
        methods=["GET"],
        tags=TAGS,
        summary="The caller's live sessions, newest first, a page at a time",
        operation_id=operation_id("list_sessions", path),
        responses={
            200: {
                "model": list[SessionBody],
                "description": "A page of the live sessions",
                "headers": {
                    "Link": {
                        "description": 'The next page, as <url>; rel="next" (RFC 8288)',
                        "schema": {"type": "string"},
                    }
                },
            },
            **error_responses(400, 401, 503),
        },
        openapi_extra={"parameters": SESSION_PAGE_PARAMETERS},
    )
    router.add_api_route(
        f"{path}/{REVOKE_OTHERS}",
        handlers.revoke_others,
        methods=["POST"],
        tags=TAGS,
        status_code=204,
        summary="End every session of the caller except the current one",
        operation_id=operation_id("revoke_other_sessions", path),
        responses={
            204: {"description": "Every other session is revoked"},
            **error_responses(401, 503),
        },
    )
    router.add_api_route(
        path + "/{session_id:" + _SESSION_ID_CONVERTOR + "}",
        handlers.revoke_session,
        methods=["DELETE"],
        tags=TAGS,
        status_code=204,
        summary="End one of the caller's sessions: its refresh and access tokens stop working",
        operation_id=operation_id("revoke_session", path),
        responses={
            204: {"description": "The session is revoked"},
            **error_responses(401, 404, 503),
        },
    )
