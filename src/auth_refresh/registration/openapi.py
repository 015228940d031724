"""OpenAPI that Swagger UI can use: the schemes the registrations' routes name.

The access guard depends on the scheme its extractor reads (``transport/schemes.py``), so
FastAPI shows the lock and Swagger UI sends the token. Where a refresh token comes from is
known at startup only (settings may come from a factory): each registration's
``RefreshSource`` says it then, and the application's ``openapi()`` writes it into the schema
FastAPI made: the registration's own routes (by operation id), the routes guarded by its
``AuthRefreshGuard`` (by the guard's marker scheme), the 401 of every access-guarded operation.
Written into the schema, not into the routes: FastAPI may copy a route when it is first used.
Until every module has started, ``openapi()`` makes the schema again on each call instead of
keeping an incomplete one. An OAuth2 scheme (the token endpoint's password flow) is offered
wherever the bearer access scheme is: its tokens are access tokens, sent the same way.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from fastapi import FastAPI
from fastapi.security.base import SecurityBase

from auth_refresh.flows.guards import GUARD_MARKER, AppFlows, guard_marker_name
from auth_refresh.flows.refresh import RefreshFlow
from auth_refresh.transport.cookies import CookieTransport
from auth_refresh.transport.responses import (
    COOKIE_ANSWER,
    SET_COOKIE,
    CookieTokenBody,
    ErrorBody,
    error_responses,
)
from auth_refresh.transport.schemes import ACCESS_SCHEME, source_of

__all__ = ["DocumentedModule", "RefreshSource", "RoutedScheme", "install_openapi"]

# What reading a refresh token may answer: a malformed or oversized body, no valid token, the
# store out of reach; with cookie transport, a missing CSRF token (403).
_REFRESH_ERRORS: tuple[int, ...] = (400, 401, 413, 503)
_SOURCE_FIELDS = ("requestBody", "parameters", "security")


class DocumentedModule(Protocol):
    """A module whose routes name security schemes the application's OpenAPI must define."""

    security_schemes: dict[str, SecurityBase]
    started: bool


@runtime_checkable
class RoutedScheme(Protocol):
    """A scheme naming one of the application's routes by URL (OAuth2's ``tokenUrl``)."""

    def openapi_at(self, app: FastAPI, base: str) -> dict[str, Any]:
        """The scheme's object in ``app``'s schema, whose paths are below ``base``: the first
        server the application declares, or "" (FastAPI adds the ``root_path`` per request)."""
        ...


@dataclass
class RefreshSource:
    """Where one refresh registration reads its token, in OpenAPI, once known (at startup):
    its routes' ``requestBody``, ``parameters`` and ``security``, the errors reading it may
    answer, and whether answers carry the token in a cookie. ``reads`` and ``answers`` are the
    operation ids of the routes that read a refresh token and that answer with a pair."""

    reads: set[str] = field(default_factory=set)
    answers: set[str] = field(default_factory=set)
    operation: dict[str, Any] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    cookie: bool = False

    def describe(
        self, extractor: Any, transport: CookieTransport | None
    ) -> dict[str, SecurityBase]:
        """Know the source from the registration's extractor and transport; the schemes named."""
        operation, schemes = source_of(extractor)
        if transport is not None:
            parameters = [*operation.get("parameters", ()), transport.csrf_parameter()]
            operation = {**operation, "parameters": parameters}
        self.operation = operation
        self.cookie = transport is not None
        self.errors = (*_REFRESH_ERRORS, 403) if self.cookie else _REFRESH_ERRORS
        return schemes


@runtime_checkable
class _RefreshModule(Protocol):
    # A refresh registration: its guard's flow, and where it reads its token.
    flow: RefreshFlow
    refresh_source: RefreshSource


def install_openapi(app: FastAPI, modules: Sequence[DocumentedModule], flows: AppFlows) -> None:
    """Complete ``app.openapi()`` with the modules' schemes, the guarded routes' 401 and where
    the refresh routes and the routes guarded by ``AuthRefreshGuard`` read the token."""
    generate = app.openapi
    # A schema made before the modules joined (app.openapi() called early) lacks their parts.
    app.openapi_schema = None
    kept: list[Any] = [None, None]  # the complete schema, and the modules it was made with

    def openapi() -> dict[str, Any]:
        ready = [(id(module), module.started) for module in modules]
        if app.openapi_schema is not None and app.openapi_schema is kept[0] and ready == kept[1]:
            return app.openapi_schema
        app.openapi_schema = None
        schema = generate()
        _complete(schema, list(modules), flows, app)
        if all(started for _, started in ready):
            app.openapi_schema, kept[:] = schema, [schema, ready]
        else:
            # A module not started yet knows its routes' token source at startup: again then.
            app.openapi_schema = None
        return schema

    # FastAPI's documented way to extend the schema: replace the application's openapi().
    setattr(app, "openapi", openapi)  # noqa: B010


def _complete(
    schema: dict[str, Any], modules: list[DocumentedModule], flows: AppFlows, app: FastAPI
) -> None:
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
    sources = {
        guard_marker_name(module.flow): module.refresh_source
        for module in modules
        if isinstance(module, _RefreshModule)
    }
    if flows.refresh is not None and guard_marker_name(flows.refresh) in sources:
        sources[guard_marker_name(None)] = sources[guard_marker_name(flows.refresh)]
    for name in [name for name in security_schemes if name.startswith(GUARD_MARKER)]:
        del security_schemes[name]  # a marker, replaced by what it stands for
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            security = operation.get("security", [])
            if {ACCESS_SCHEME: []} in security:
                security.extend({name: []} for name in oauth2 if {name: []} not in security)
            _complete_operation(operation, sources, components)
    if not security_schemes:
        del components["securitySchemes"]
    if not components:
        del schema["components"]


def _complete_operation(
    operation: dict[str, Any], sources: dict[str, RefreshSource], components: dict[str, Any]
) -> None:
    operation_id = operation.get("operationId")
    for source in sources.values():
        if not source.errors:
            continue  # not started: the routes keep what they were created with
        if operation_id in source.reads:
            for name in _SOURCE_FIELDS:
                operation.pop(name, None)
            operation.update(source.operation)
            _add_errors(operation, source.errors, components)
        if operation_id in source.answers and source.cookie:
            _answer_in_cookie(operation, components)
    markers = _guard_markers(operation)
    if markers:
        _merge_guarded(operation, markers, sources, components)
    names = {name for requirement in operation.get("security", ()) for name in requirement}
    if any(name.startswith(ACCESS_SCHEME) for name in names):
        _add_errors(operation, (401,), components)


def _guard_markers(operation: dict[str, Any]) -> list[str]:
    return [
        name
        for requirement in operation.get("security", ())
        for name in requirement
        if name.startswith(GUARD_MARKER)
    ]


def _merge_guarded(
    operation: dict[str, Any],
    markers: list[str],
    sources: dict[str, RefreshSource],
    components: dict[str, Any],
) -> None:
    # FastAPI lists each security dependency as a requirement of its own; the markers go.
    own = [
        {name: scopes for name, scopes in requirement.items() if name not in markers}
        for requirement in operation["security"]
    ]
    own = [requirement for requirement in own if requirement]
    if own:
        operation["security"] = own
    else:
        del operation["security"]
    for marker in dict.fromkeys(markers):
        source = sources.get(marker)
        if source is not None and source.errors:
            _merge_source(operation, source, components)


def _merge_source(
    operation: dict[str, Any], source: RefreshSource, components: dict[str, Any]
) -> None:
    described = source.operation
    if "requestBody" in described:
        # A route with a body of its own reads the token from it: its schema stays.
        operation.setdefault("requestBody", described["requestBody"])
    parameters = operation.setdefault("parameters", [])
    present = {(parameter.get("in"), parameter.get("name")) for parameter in parameters}
    for parameter in described.get("parameters", ()):
        if (parameter["in"], parameter["name"]) not in present:
            parameters.append(parameter)
    if not parameters:
        del operation["parameters"]
    if "security" in described:
        # Every requirement the route has already (an access token, say) and one of these.
        own = operation.get("security") or [{}]
        operation["security"] = [
            {**mine, **theirs} for mine, theirs in itertools.product(own, described["security"])
        ]
    _add_errors(operation, source.errors, components)


def _answer_in_cookie(operation: dict[str, Any], components: dict[str, Any]) -> None:
    schemas = components.setdefault("schemas", {})
    schemas.setdefault("CookieTokenBody", CookieTokenBody.model_json_schema())
    responses = operation.setdefault("responses", {})
    responses["200"] = {
        "description": COOKIE_ANSWER,
        "headers": SET_COOKIE,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/CookieTokenBody"}}
        },
    }
    _add_errors(operation, (403,), components)


def _add_errors(
    operation: dict[str, Any], status_codes: Iterable[int], components: dict[str, Any]
) -> None:
    responses = operation.setdefault("responses", {})
    for status_code, answer in error_responses(*status_codes).items():
        if str(status_code) in responses:
            continue
        schemas = components.setdefault("schemas", {})
        schemas.setdefault("ErrorBody", ErrorBody.model_json_schema())
        described: dict[str, Any] = {
            "description": answer["description"],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
        }
        if "headers" in answer:
            described["headers"] = answer["headers"]
        responses[str(status_code)] = described
