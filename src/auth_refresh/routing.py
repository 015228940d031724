"""The built-in routes: ``POST /auth/refresh``."""

# No "from __future__ import annotations": FastAPI must see the Depends of a local guard.
import re
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.routing import APIRoute
from starlette.responses import Response

from auth_refresh.container import DEFAULT_EXTRACTOR
from auth_refresh.responses import TokenPairBody, error_responses, token_response

if TYPE_CHECKING:
    from auth_refresh.module import AuthRefreshModule

__all__ = ["operation_id", "refresh_router"]


def operation_id(method: str, path: str) -> str:
    return method + "_" + re.sub(r"\W+", "_", path).strip("_")


def refresh_router(module: "AuthRefreshModule") -> tuple[APIRouter, APIRoute]:
    """A router with the module's refresh route, and the route (its OpenAPI is set at startup)."""
    router = APIRouter(tags=["auth"])

    async def refresh(user: Annotated[Any, Depends(module.guard)]) -> Response:
        return token_response(await module.issue(user))

    router.add_api_route(
        module.path,
        refresh,
        methods=["POST"],
        summary="Exchange a refresh token for a new access and refresh token",
        operation_id=operation_id("refresh", module.path),
        responses={
            200: {"model": TokenPairBody, "description": "A new token pair"},
            **error_responses(400, 401),
        },
        openapi_extra=DEFAULT_EXTRACTOR.openapi(),
    )
    route = router.routes[-1]
    assert isinstance(route, APIRoute)
    return router, route
