"""The built-in routes: ``POST /auth/refresh`` and, when asked for, ``POST /auth/logout`` and
the session routes (``session_routes``)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from auth_refresh.application import module_lifespan
from auth_refresh.container import DEFAULT_EXTRACTOR
from auth_refresh.openapi import source_of
from auth_refresh.responses import TokenPairBody, error_responses
from auth_refresh.session_routes import add_session_routes
from auth_refresh.telemetry import operation_span

if TYPE_CHECKING:
    from auth_refresh.module import AuthRefreshModule

__all__ = ["operation_id", "refresh_router"]


def operation_id(method: str, path: str) -> str:
    return method + "_" + re.sub(r"\W+", "_", path).strip("_")


def refresh_router(module: AuthRefreshModule) -> tuple[APIRouter, list[APIRoute]]:
    """The module's router (its lifespan starts the module), and its routes, whose OpenAPI
    is completed at startup, when the extractor is known."""
    router = APIRouter(tags=["auth"], lifespan=module_lifespan(module))

    async def refresh(request: Request) -> Response:
        with operation_span("refresh"):
            refreshed = await module.refresh(request)
            assert refreshed.pair is not None  # asked for
            return module.token_response(refreshed.pair)

    async def logout(request: Request) -> Response:
        with operation_span("logout"):
            await module.logout(request)
            return module.logout_response()

    described, _ = source_of(DEFAULT_EXTRACTOR)
    if module.controllers:
        router.add_api_route(
            module.path,
            refresh,
            methods=["POST"],
            summary="Exchange a refresh token for a new access and refresh token",
            operation_id=operation_id("refresh", module.path),
            responses={
                200: {"model": TokenPairBody, "description": "A new token pair"},
                **error_responses(400, 401, 413, 503),
            },
            openapi_extra=described,
        )
    if module.logout_path is not None:
        router.add_api_route(
            module.logout_path,
            logout,
            methods=["POST"],
            status_code=204,
            summary="Log out: revoke the refresh token's family (this session's tokens)",
            operation_id=operation_id("logout", module.logout_path),
            responses={
                204: {"description": "The session's refresh tokens are revoked"},
                **error_responses(400, 401, 413, 503),
            },
            openapi_extra=described,
        )
    # The refresh token's routes, documented at startup; the session routes take an access token.
    routes = [route for route in router.routes if isinstance(route, APIRoute)]
    if module.sessions_path is not None:
        add_session_routes(router, module, module.sessions_path)
    return router, routes
