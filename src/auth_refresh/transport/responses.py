"""The JSON bodies this library answers with, and their OpenAPI models."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, runtime_checkable

from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from auth_refresh.exceptions import AuthRefreshError
from auth_refresh.types import TokenPair

__all__ = [
    "COOKIE_ANSWER",
    "ERROR_HEADERS",
    "SET_COOKIE",
    "CookieTokenBody",
    "ErrorBody",
    "TokenPairBody",
    "TokenResponder",
    "error_response",
    "token_response",
]

log = logging.getLogger("auth_refresh")

# RFC 6749 §5.1: token responses must not be cached.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class TokenPairBody(BaseModel):
    """A new access and refresh token."""

    accessToken: str = Field(description="Access token (JWT, typ at+jwt)")
    refreshToken: str = Field(description="Refresh token (JWT, typ rt+jwt)")
    tokenType: Literal["DPoP"] | None = Field(
        default=None, description="DPoP when the pair is bound to the proof's key (RFC 9449)"
    )


COOKIE_ANSWER = (
    "A new access token and CSRF token; the refresh token is in the HttpOnly cookie "
    "(and in the body only with AUTH_REFRESH_COOKIE_BODY_REFRESH_TOKEN)"
)


# The headers of an answer with cookie transport, for OpenAPI.
SET_COOKIE = {
    "Set-Cookie": {
        "description": "The refresh token (HttpOnly, limited to the refresh and logout paths) "
        "and the csrf_token cookie",
        "schema": {"type": "string"},
    }
}


class CookieTokenBody(BaseModel):
    """The answer with cookie transport: the refresh token travels in a cookie."""

    accessToken: str = Field(description="Access token (JWT, typ at+jwt)")
    csrfToken: str = Field(description="Send it back in the X-CSRF-Token header")
    refreshToken: str | None = Field(default=None, description="Only when configured")
    tokenType: Literal["DPoP"] | None = Field(
        default=None, description="DPoP when the tokens are bound to the proof's key (RFC 9449)"
    )


class ErrorBody(BaseModel):
    """The body of every error this library answers with."""

    statusCode: int
    errorCode: str
    message: str
    timestamp: str = Field(description="ISO 8601, UTC")


def error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "Malformed request",
        401: "Missing or invalid credentials",
        403: "Forbidden",
        404: "Not found",
        413: "Request body too large",
        429: "Too many requests from this client",
        503: "Service unavailable",
    }
    responses: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorBody, "description": descriptions[code]} for code in status_codes
    }
    for code, headers in ERROR_HEADERS.items():
        if code in responses:
            responses[code]["headers"] = headers
    return responses


# RFC 6750 §3: a 401 names its scheme; a 429 and a 503 say when to try again.
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again",
        "schema": {"type": "integer"},
    }
}
ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "The scheme, and the error when a token was sent: Bearer "
            'error="invalid_token"',
            "schema": {"type": "string"},
        }
    },
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}


@runtime_checkable
class TokenResponder(Protocol):
    """An issue service that also shapes the login answer (``login_issue_token_service``)."""

    def check_request(self, request: Request) -> None:
        """Raise for a login request its transport must not answer."""
        ...

    def describe_route(self, route: APIRoute) -> None:
        """Document ``route``'s answer in its transport, once the transport is known."""
        ...

    def token_response(self, pair: TokenPair) -> Response: ...


def token_response(pair: TokenPair) -> Response:
    return JSONResponse(dict(pair), headers=NO_STORE)


async def error_response(request: Request, exc: Exception) -> Response:
    """The exception handler for ``AuthRefreshError``."""
    assert isinstance(exc, AuthRefreshError)
    message = exc.message
    if exc.status_code >= 500 and exc.status_code != 503:
        # A configuration fault met at request time: the details go to the log, not the client.
        log.error("%s: %s", type(exc).__name__, exc.message)
        message = AuthRefreshError.default_message
    body = {
        "statusCode": exc.status_code,
        "errorCode": exc.error_code,
        "message": message,
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    return JSONResponse(body, status_code=exc.status_code, headers={**NO_STORE, **exc.headers})
