"""Where a token travels, as an OpenAPI security scheme Swagger UI can use.

FastAPI's own classes (``HTTPBearer``, ``APIKeyHeader``, ``APIKeyCookie``, ``APIKeyQuery``, all
``auto_error=False``): each is a dependency as well as a scheme, so a guard depending on one
shows the lock and Swagger UI sends the token.
"""

from __future__ import annotations

from typing import Any

from fastapi.security import APIKeyCookie, APIKeyHeader, APIKeyQuery, HTTPBearer
from fastapi.security.base import SecurityBase

from auth_refresh.transport.extractors import (
    AuthHeaderSchemeExtractor,
    ChainExtractor,
    CookieExtractor,
    Extractor,
    HeaderExtractor,
    QueryParameterExtractor,
)

__all__ = ["ACCESS_SCHEME", "REFRESH_SCHEME", "Scheme", "access_scheme", "source_of"]

ACCESS_SCHEME = "AccessToken"
# FastAPI's security classes this module uses: each is a dependency as well as a scheme.
Scheme = HTTPBearer | APIKeyHeader | APIKeyCookie | APIKeyQuery
REFRESH_SCHEME = "RefreshToken"


def access_scheme(extractor: Any) -> Scheme:
    """The scheme an access-token guard documents for ``extractor`` (bearer by default)."""
    scheme = _scheme_of(extractor, ACCESS_SCHEME, "An access token")
    if scheme is None:  # unknown until startup, or a custom extractor: the default, bearer
        scheme = _scheme_of(AuthHeaderSchemeExtractor("bearer"), ACCESS_SCHEME, "An access token")
    assert scheme is not None
    return scheme


def _scheme_of(extractor: Any, name: str, description: str) -> Scheme | None:
    if isinstance(extractor, AuthHeaderSchemeExtractor) and extractor.scheme == "bearer":
        return HTTPBearer(
            scheme_name=name, bearerFormat="JWT", description=description, auto_error=False
        )
    if isinstance(extractor, AuthHeaderSchemeExtractor):
        return APIKeyHeader(
            name="Authorization",
            scheme_name=f"{name}{extractor.scheme.title()}",
            description=f"{description}, as '{extractor.scheme} <token>'",
            auto_error=False,
        )
    if isinstance(extractor, HeaderExtractor):
        return APIKeyHeader(
            name=extractor.name,
            scheme_name=f"{name}Header",
            description=description,
            auto_error=False,
        )
    if isinstance(extractor, CookieExtractor):
        return APIKeyCookie(
            name=extractor.name,
            scheme_name=f"{name}Cookie",
            description=description,
            auto_error=False,
        )
    if isinstance(extractor, QueryParameterExtractor):
        return APIKeyQuery(
            name=extractor.name,
            scheme_name=f"{name}Query",
            description=description,
            auto_error=False,
        )
    return None


def source_of(extractor: Any) -> tuple[dict[str, Any], dict[str, SecurityBase]]:
    """Where the refresh route reads its token: the operation's ``requestBody``,
    ``parameters`` and ``security`` (alternatives), and the schemes those name."""
    parts = list(extractor.extractors) if isinstance(extractor, ChainExtractor) else [extractor]
    schemes: dict[str, SecurityBase] = {}
    body: dict[str, Any] | None = None
    parameters: list[dict[str, Any]] = []
    for part in parts:
        scheme = _scheme_of(part, REFRESH_SCHEME, "A refresh token")
        if scheme is not None:
            schemes[scheme.scheme_name] = scheme
        elif isinstance(part, Extractor):
            # The body extractor, or one of the user's that describes itself.
            described = part.openapi()
            body = body or described.get("requestBody")
            parameters.extend(described.get("parameters", ()))
        # A custom extractor that says nothing of where it looks: claim nothing for it.
    alternatives = len(schemes) + len(parameters) + (body is not None)
    operation: dict[str, Any] = {}
    if body is not None:
        # Required when the body is the only place the token may come from.
        operation["requestBody"] = {**body, "required": alternatives == 1}
    if parameters:
        operation["parameters"] = [
            {**parameter, "required": alternatives == 1} for parameter in parameters
        ]
    if schemes:
        security: list[dict[str, list[str]]] = [{name: []} for name in schemes]
        if alternatives > len(schemes):
            security.append({})  # or none of these: the token is elsewhere
        operation["security"] = security
    return operation, schemes
