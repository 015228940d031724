"""Finding the token in a request, after passport-jwt's ``ExtractJwt``.

An extractor is any callable ``(request) -> str | None`` (sync or async). A value that is not a
non-empty string counts as no token. The built-in ones also describe themselves for OpenAPI.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.types import Message, Receive

from auth_refresh._utils import MaybeAwaitable, is_unicode_text, refuse_json_constant, resolve
from auth_refresh.exceptions import InvalidRequestError, RequestTooLargeError

__all__ = [
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
    "read_body_fields",
    "single_field",
]

TokenExtractor = Callable[[Request], MaybeAwaitable[Any]]

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# Far above any token or login form, far below what would strain memory.
MAX_BODY_BYTES = 64 * 1024


@runtime_checkable
class Extractor(Protocol):
    """A built-in extractor: finds the token and says where it looks."""

    def __call__(self, request: Request) -> Awaitable[str | None]: ...

    def openapi(self) -> dict[str, Any]:
        """``{"parameters": [...]}`` and/or ``{"requestBody": {...}}`` for the operation."""
        ...


def _token(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_body_fields(
    request: Request, *, max_bytes: int = MAX_BODY_BYTES
) -> Mapping[str, Any] | None:
    """The fields of a JSON object or form body; None for other bodies.

    Raises ``InvalidRequestError`` when the body claims to be JSON or a form and is not, or
    holds text that is not Unicode (a lone surrogate), and ``RequestTooLargeError`` (413) when
    it is longer than ``max_bytes``. The work is linear in the body's size whatever its shape.
    """
    content_type = _content_type(request)
    is_json = content_type == "application/json" or content_type.endswith("+json")
    if not is_json and content_type not in _FORM_TYPES:
        return None
    declared = _declared_length(request, max_bytes)
    if is_json:
        return _json_fields(await _limited_body(request, declared, max_bytes))
    form = await _limited_form(request, declared, max_bytes)
    for name, value in form.multi_items():
        text = value if isinstance(value, str) else (value.filename or "")
        if not (is_unicode_text(name) and is_unicode_text(text)):
            raise InvalidRequestError(_NOT_UNICODE)
    return form


_NOT_UNICODE = "The request body holds text that is not valid Unicode"
# Where a body read here without a Content-Length is kept for the rest of the request: once
# the stream is read, Starlette cannot give it again.
_BODY_STATE = "auth_refresh_body"


def _declared_length(request: Request, max_bytes: int) -> int | None:
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    if not (declared.isascii() and declared.isdigit()):
        raise InvalidRequestError("The Content-Length header is not a number")
    length = int(declared)
    if length > max_bytes:
        raise RequestTooLargeError()
    return length


async def _limited_body(request: Request, declared: int | None, max_bytes: int) -> bytes:
    if declared is not None:
        # The server delivers no more than the declared length; Starlette keeps the body for
        # the route and any other reader.
        body = await request.body()
    else:
        body = await _chunked_body(request, max_bytes)
    if len(body) > max_bytes:
        raise RequestTooLargeError()
    return body


async def _chunked_body(request: Request, max_bytes: int) -> bytes:
    kept: bytes | None = getattr(request.state, _BODY_STATE, None)
    if kept is not None:
        return kept
    # Read in chunks and stop at the limit, so an endless body costs at most max_bytes.
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise RequestTooLargeError()
        chunks.append(chunk)
    body = b"".join(chunks)
    setattr(request.state, _BODY_STATE, body)
    return body


async def _limited_form(request: Request, declared: int | None, max_bytes: int) -> FormData:
    try:
        if declared is not None:
            # Parsed once per request: a route with Form() or File() parameters has parsed it
            # already, and Starlette gives the same form again.
            return await request.form()
        try:
            body = await _chunked_body(request, max_bytes)
        except RuntimeError:  # the stream is spent: the route parsed the form itself
            return await request.form()
        form = await Request(request.scope, _replay(body)).form()
        # A copy the route never sees: its files are closed here, its text fields stay.
        await form.close()
        return form
    except RequestTooLargeError:
        raise
    except Exception:  # multipart parsing raises several types; all mean a bad body
        raise InvalidRequestError("The request body is not a valid form") from None


def _replay(body: bytes) -> Receive:
    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _json_fields(body: bytes) -> Mapping[str, Any] | None:
    if not body.strip():
        return None
    try:
        # RFC 8259 §8.1: JSON between systems is UTF-8; json.loads would guess UTF-16/32.
        # NaN and Infinity are not JSON (RFC 8259 §6), whatever Python's parser allows.
        text = body.decode("utf-8")
        data = _BODY_DECODER.decode(text)
    except ValueError:  # UnicodeDecodeError included
        raise InvalidRequestError("The request body is not valid JSON") from None
    except RecursionError:
        raise InvalidRequestError("The request body is nested too deeply") from None
    # "\ud800" escapes decode to lone surrogates; strict UTF-8 decoding never yields one, so
    # without a "\u" there is nothing to look for.
    if "\\u" in text and not _all_unicode_text(data):
        raise InvalidRequestError(_NOT_UNICODE)
    return data if isinstance(data, dict) else None


def _all_unicode_text(value: object) -> bool:
    # Iterative: a deeply nested body cannot make the walk itself recurse.
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not is_unicode_text(item):
                return False
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True


class _JsonObject(dict[str, Any]):
    """A JSON object, and the member names it repeats (of which the last value is kept)."""

    repeated: frozenset[str] = frozenset()


def _json_object(pairs: list[tuple[str, Any]]) -> _JsonObject:
    members = _JsonObject(pairs)
    if len(members) != len(pairs):
        # One pass with a set: counting each name against the others would be quadratic.
        seen: set[str] = set()
        repeated: set[str] = set()
        for name, _ in pairs:
            (repeated if name in seen else seen).add(name)
        members.repeated = frozenset(repeated)
    return members


_BODY_DECODER = json.JSONDecoder(
    parse_constant=refuse_json_constant, object_pairs_hook=_json_object
)


def single_field(fields: Mapping[str, Any], name: str) -> Any:
    """The value of ``name`` in a body's fields, None without it; ``InvalidRequestError``
    when the body gives it more than once, rather than keeping one of them silently."""
    if isinstance(fields, _JsonObject) and name in fields.repeated:
        raise InvalidRequestError("The request body gives one field more than once")
    if isinstance(fields, FormData) and len(fields.getlist(name)) > 1:
        raise InvalidRequestError("The request body gives one field more than once")
    return fields.get(name)


def _single_header(request: Request, name: str) -> str | None:
    values = request.headers.getlist(name)
    if len(values) > 1:
        raise InvalidRequestError(f"The request repeats the {name} header")
    return values[0] if values else None


class BodyFieldExtractor:
    """The token from a field of a JSON or form body (the original's default: ``refreshToken``)."""

    def __init__(self, field: str = "refreshToken") -> None:
        self.field = field

    async def __call__(self, request: Request) -> str | None:
        fields = await read_body_fields(request)
        return _token(single_field(fields, self.field)) if fields is not None else None

    def openapi(self) -> dict[str, Any]:
        schema = {
            "type": "object",
            "properties": {self.field: {"type": "string"}},
            "required": [self.field],
        }
        return {
            "requestBody": {
                "content": {
                    "application/json": {"schema": schema},
                    "application/x-www-form-urlencoded": {"schema": schema},
                    "multipart/form-data": {"schema": schema},
                }
            }
        }


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
