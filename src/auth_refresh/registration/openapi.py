"""OpenAPI that Swagger UI can use: the schemes the registrations' routes name.

The access guard depends on the scheme its extractor reads (``transport/schemes.py``), so
FastAPI shows the lock and Swagger UI sends the token. The refresh route's source is known at
startup only (settings may come from a factory): ``describe_refresh_routes`` documents it then,
and the application's ``openapi()`` adds those schemes and the 401 of every guarded operation.
An OAuth2 scheme (the token endpoint's password flow) is offered wherever the bearer access
scheme is: its tokens are access tokens, sent the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.security.base import SecurityBase

from auth_refresh.transport.cookies import CookieTransport
from auth_refresh.transport.responses import (
    COOKIE_ANSWER,
    SET_COOKIE,
    CookieTokenBody,
    ErrorBody,
    error_responses,
)
from auth_refresh.transport.schemes import ACCESS_SCHEME, source_of

__all__ = ["DocumentedModule", "RoutedScheme", "describe_refresh_routes", "install_openapi"]


class DocumentedModule(Protocol):
    """A module whose routes name security schemes the application's OpenAPI must define."""

    security_schemes: dict[str, SecurityBase]


@runtime_checkable
class RoutedScheme(Protocol):
    """A scheme naming one of the application's routes by URL (OAuth2's ``tokenUrl``)."""

    def openapi_at(self, app: FastAPI, base: str) -> dict[str, Any]:
        """The scheme's object in ``app``'s schema, whose paths are below ``base``: the first
        server the application declares, or "" (FastAPI adds the ``root_path`` per request)."""
        ...


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
        _complete(schema, list(modules), app)
        return schema

    # FastAPI's documented way to extend the schema: replace the application's openapi().
    setattr(app, "openapi", openapi)  # noqa: B010


def _complete(schema: dict[str, Any], modules: list[DocumentedModule], app: FastAPI) -> None:
    components = schema.setdefault("components", {})
    security_schemes = components.setdefault("securitySchemes", {})
    servers = schema.get("servers") or [{}]
    oauth2: list[str] = []  # the token endpoint's flow: its tokens are bearer access tokens
    for module in modules:
        for name, scheme in module.security_schemes.items():
            if isinstance(scheme, RoutedScheme):
                security_schemes[name] = scheme.openapi_at(app, str(servers[0].get("url", "")))
                oauth2.append(name)
            else:
                security_schemes[name] = scheme.model.model_dump(
                    mode="json", by_alias=True, exclude_none=True
                )
    unauthorized = error_responses(401)[401]
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            security = operation.get("security", [])
            if {ACCESS_SCHEME: []} in security:
                security.extend({name: []} for name in oauth2 if {name: []} not in security)
            if "401" in operation.get("responses", {}):
                continue
            names = {name for requirement in security for name in requirement}
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
