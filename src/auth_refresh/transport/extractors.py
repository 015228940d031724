"""Finding the token in a request, after passport-jwt's ``ExtractJwt``.

An extractor is any callable ``(request) -> str | None`` (sync or async). A value that is not a
non-empty string counts as no token. The built-in ones also describe themselves for OpenAPI.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from starlette.requests import Request

from auth_refresh._utils import MaybeAwaitable, resolve
from auth_refresh.exceptions import InvalidRequestError
from auth_refresh.settings import AuthRefreshSettings
from auth_refresh.transport.bodies import (
    MAX_BODY_BYTES,
    BodyFieldExtractor,
    read_body_fields,
    single_field,
)
from auth_refresh.transport.cookies import refresh_cookie_name

# bodies.py's, named here too: custom extractors read the body with them.
__all__ = [
    "DEFAULT_EXTRACTOR",
    "MAX_BODY_BYTES",
    "AuthHeaderSchemeExtractor",
    "BodyFieldExtractor",
    "ChainExtractor",
    "CookieExtractor",
    "ExtractJwt",
    "Extractor",
    "HeaderExtractor",
    "QueryParameterExtractor",
    "TokenExtractor",
    "extractor_for",
    "read_body_fields",
    "single_field",
]

TokenExtractor = Callable[[Request], MaybeAwaitable[Any]]


@runtime_checkable
class Extractor(Protocol):
    """A built-in extractor: finds the token and says where it looks."""

    def __call__(self, request: Request) -> Awaitable[str | None]: ...

    def openapi(self) -> dict[str, Any]:
        """``{"parameters": [...]}`` and/or ``{"requestBody": {...}}`` for the operation."""
        ...


def _token(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _single_header(request: Request, name: str) -> str | None:
    values = request.headers.getlist(name)
    if len(values) > 1:
        raise InvalidRequestError(f"The request repeats the {name} header")
    return values[0] if values else None


class HeaderExtractor:
    """The token as the whole value of a header."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def __call__(self, request: Request) -> str | None:
        return _token(_single_header(request, self.name))

    def openapi(self) -> dict[str, Any]:
        return {"parameters": [_parameter("header", self.name)]}


class AuthHeaderSchemeExtractor:
    """The token from ``Authorization: <scheme> <token>``; the scheme matches in any case."""

    def __init__(self, scheme: str) -> None:
        self.scheme = scheme.lower()

    async def __call__(self, request: Request) -> str | None:
        parts = (_single_header(request, "authorization") or "").split()
        if len(parts) == 2 and parts[0].lower() == self.scheme:
            return parts[1]
        return None

    def openapi(self) -> dict[str, Any]:
        return {"parameters": [_parameter("header", "Authorization", f"{self.scheme} <token>")]}


class QueryParameterExtractor:
    """The token from a URL query parameter."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def __call__(self, request: Request) -> str | None:
        return _token(request.query_params.get(self.name))

    def openapi(self) -> dict[str, Any]:
        return {"parameters": [_parameter("query", self.name)]}


class CookieExtractor:
    """The token from a cookie."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def __call__(self, request: Request) -> str | None:
        token = _token(request.cookies.get(self.name))
        if token is not None and len(_cookie_values(request, self.name)) > 1:
            # Another site of the same domain can set a cookie of this name (cookie tossing).
            raise InvalidRequestError(f"The request carries two {self.name} cookies")
        return token

    def openapi(self) -> dict[str, Any]:
        return {"parameters": [_parameter("cookie", self.name)]}


class ChainExtractor:
    """The token any of several extractors finds.

    Every extractor is asked. The same token in several places is accepted; two different
    tokens are an ``invalid_request`` (RFC 6750 §2), so which one counts is never decided
    by the order of the list.
    """

    def __init__(self, extractors: Sequence[TokenExtractor]) -> None:
        self.extractors = tuple(extractors)

    async def __call__(self, request: Request) -> str | None:
        found: str | None = None
        for extractor in self.extractors:
            token = _token(await resolve(extractor(request)))
            if token is None:
                continue
            if found is not None and token != found:
                raise InvalidRequestError("The request carries more than one token")
            found = token
        return found

    def openapi(self) -> dict[str, Any]:
        parameters: list[dict[str, Any]] = []
        description: dict[str, Any] = {}
        for extractor in self.extractors:
            if isinstance(extractor, Extractor):
                part = extractor.openapi()
                parameters.extend(part.get("parameters", ()))
                # The first extractor that reads the body describes it.
                if part.get("requestBody") is not None:
                    description.setdefault("requestBody", part["requestBody"])
        for parameter in parameters:
            parameter["required"] = False
        if description.get("requestBody") is None:
            description.pop("requestBody", None)
        else:
            description["requestBody"] = {**description["requestBody"], "required": False}
        if parameters:
            description["parameters"] = parameters
        return description


def _cookie_values(request: Request, name: str) -> set[str]:
    # Starlette's parsed cookies keep one value per name; the header has them all.
    values = set()
    for header in request.headers.getlist("cookie"):
        for part in header.split(";"):
            cookie_name, equals, value = part.partition("=")
            if equals and cookie_name.strip() == name:
                values.add(value.strip())
    return values


def _parameter(location: str, name: str, description: str = "The token") -> dict[str, Any]:
    return {
        "in": location,
        "name": name,
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


class ExtractJwt:
    """Factories for the built-in extractors, named as in passport-jwt."""

    @staticmethod
    def from_body_field(field: str = "refreshToken") -> BodyFieldExtractor:
        return BodyFieldExtractor(field)

    @staticmethod
    def from_header(name: str) -> HeaderExtractor:
        return HeaderExtractor(name)

    @staticmethod
    def from_auth_header_with_scheme(scheme: str) -> AuthHeaderSchemeExtractor:
        return AuthHeaderSchemeExtractor(scheme)

    @staticmethod
    def from_auth_header_as_bearer_token() -> AuthHeaderSchemeExtractor:
        return AuthHeaderSchemeExtractor("bearer")

    @staticmethod
    def from_url_query_parameter(name: str) -> QueryParameterExtractor:
        return QueryParameterExtractor(name)

    @staticmethod
    def from_cookie(name: str) -> CookieExtractor:
        return CookieExtractor(name)

    @staticmethod
    def from_extractors(extractors: Sequence[TokenExtractor]) -> ChainExtractor:
        return ChainExtractor(extractors)


DEFAULT_EXTRACTOR = BodyFieldExtractor("refreshToken")


def extractor_for(settings: AuthRefreshSettings) -> TokenExtractor:
    """The extractor ``settings`` ask for: ``jwt_from_request``, else the body field
    ``refreshToken`` (the refresh cookie first with cookie transport)."""
    if settings.jwt_from_request is not None:
        extractor: TokenExtractor = settings.jwt_from_request
        return extractor
    if settings.cookie_transport:
        return _cookie_then_body(refresh_cookie_name(settings))
    return DEFAULT_EXTRACTOR


@functools.cache
def _cookie_then_body(cookie_name: str) -> ChainExtractor:
    # Under the chain's rule, a cookie and a body naming different tokens are a 400.
    return ChainExtractor([CookieExtractor(cookie_name), DEFAULT_EXTRACTOR])
