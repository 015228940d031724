"""OpenAPI that Swagger UI can use: security schemes from FastAPI's own classes.

The access guard depends on the scheme its extractor reads (``HTTPBearer``, ``APIKeyHeader``,
``APIKeyCookie``, ``APIKeyQuery``, all ``auto_error=False``), so FastAPI shows the lock and
Swagger UI sends the token. The refresh route's source is known at startup only (settings may
come from a factory): ``describe_refresh_routes`` documents it then, and the application's
``openapi()`` adds those schemes and the 401 of every guarded operation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.security import APIKeyCookie, APIKeyHeader, APIKeyQuery, HTTPBearer
from fastapi.security.base import SecurityBase

from auth_refresh.cookies import CookieTransport
from auth_refresh.extractors import (
    AuthHeaderSchemeExtractor,
    ChainExtractor,
    CookieExtractor,
    Extractor,
    HeaderExtractor,
    QueryParameterExtractor,
)
from auth_refresh.responses import (
    COOKIE_ANSWER,
    SET_COOKIE,
    CookieTokenBody,
    ErrorBody,
    error_responses,
)

__all__ = [
    "ACCESS_SCHEME",
    "DocumentedModule",
    "Scheme",
    "access_scheme",
    "describe_refresh_routes",
    "install_openapi",
    "source_of",
]

ACCESS_SCHEME = "AccessToken"
# FastAPI's security classes this module uses: each is a dependency as well as a scheme.
Scheme = HTTPBearer | APIKeyHeader | APIKeyCookie | APIKeyQuery
REFRESH_SCHEME = "RefreshToken"


class DocumentedModule(Protocol):
    """A module whose routes name security schemes the application's OpenAPI must define."""

    security_schemes: dict[str, SecurityBase]


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


def describe_refresh_routes(
    routes: Iterable[APIRoute],
    answering_routes: Iterable[APIRoute],
    extractor: Any,
    transport: CookieTransport | None,
    logout_path: str | None,
) -> dict[str, SecurityBase]:
    """Document where the routes read the token and how they answer; the schemes named."""
    operation, schemes = source_of(extractor)
    if transport is not None:
        parameters = [*operation.get("parameters", ()), transport.csrf_parameter()]
        operation = {**operation, "parameters": parameters}
    routes = list(routes)
    for route in routes:
        route.openapi_extra = operation
    if transport is not None:
        answer = {"model": CookieTokenBody, "description": COOKIE_ANSWER, "headers": SET_COOKIE}
        for route in [*routes, *answering_routes]:
            route.responses = {**route.responses, **error_responses(403)}
            if route.path != logout_path:
                route.responses[200] = answer
    return schemes


def install_openapi(app: FastAPI, modules: Iterable[DocumentedModule]) -> None:
    """Complete ``app.openapi()`` with the modules' schemes and the guarded routes' 401."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        _complete(schema, list(modules))
        return schema

    # FastAPI's documented way to extend the schema: replace the application's openapi().
    setattr(app, "openapi", openapi)  # noqa: B010


def _complete(schema: dict[str, Any], modules: list[DocumentedModule]) -> None:
    components = schema.setdefault("components", {})
    security_schemes = components.setdefault("securitySchemes", {})
    for module in modules:
        for name, scheme in module.security_schemes.items():
            security_schemes[name] = scheme.model.model_dump(
                mode="json", by_alias=True, exclude_none=True
            )
    unauthorized = error_responses(401)[401]
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "401" in operation.get("responses", {}):
                continue
            names = {name for requirement in operation.get("security", ()) for name in requirement}
            if any(name.startswith(ACCESS_SCHEME) for name in names):
                schemas = components.setdefault("schemas", {})
                schemas.setdefault("ErrorBody", ErrorBody.model_json_schema())
                operation.setdefault("responses", {})["401"] = {
                    "description": unauthorized["description"],
                    "headers": unauthorized["headers"],
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
                    },
                }
    if not security_schemes:
        del components["securitySchemes"]
    if not components:
        del schema["components"]
