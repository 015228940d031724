"""The JWK Set route: the public keys that verify access tokens, for other services."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import JSONResponse, Response

from auth_refresh.tokens.jwt import JwtService

__all__ = ["JWKS_MEDIA_TYPE", "JWKS_PATH", "jwks_router"]

JWKS_PATH = "/.well-known/jwks.json"
JWKS_MEDIA_TYPE = "application/jwk-set+json"


def jwks_router(service: JwtService, *, path: str = JWKS_PATH) -> APIRouter:
    """A router publishing ``service.jwks()`` at ``path``: ``app.include_router(...)``."""
    router = APIRouter(tags=["auth"])

    async def jwks() -> Response:
        return JSONResponse(service.jwks(), media_type=JWKS_MEDIA_TYPE)

    router.add_api_route(
        path,
        jwks,
        methods=["GET"],
        summary="The public keys that verify access tokens (JWK Set)",
        operation_id="jwks",
        response_class=JSONResponse,
        responses={
            200: {
                "description": "A JWK Set (RFC 7517 §5)",
                "content": {
                    JWKS_MEDIA_TYPE: {
                        "schema": {
                            "type": "object",
                            "properties": {"keys": {"type": "array", "items": {"type": "object"}}},
                            "required": ["keys"],
                        }
                    }
                },
            }
        },
    )
    return router
