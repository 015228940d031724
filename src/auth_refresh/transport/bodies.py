"""Reading a request body's fields (a JSON object or a form, bounded and in linear time), and
the extractor of the original's default, a token in one of them.

At most ``MAX_BODY_BYTES`` are read; every shape of body (repeated members, deep nesting, many
fields or parts) costs time linear in its size; text that is not Unicode is refused. Only
Starlette's public ``Request`` API is used: a body with a ``Content-Length`` through ``body()``
and ``form()``, which keep it for the route; one without, read once in chunks up to the limit.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.types import Message, Receive

from auth_refresh._utils import is_unicode_text, refuse_json_constant
from auth_refresh.exceptions import InvalidRequestError, RequestTooLargeError

__all__ = [
    "MAX_BODY_BYTES",
    "BodyFieldExtractor",
    "read_body_field",
    "read_body_fields",
    "single_field",
]

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# Far above any token or login form, far below what would strain memory.
MAX_BODY_BYTES = 64 * 1024


def _content_headers(request: Request) -> tuple[str, str | None]:
    """The body's media type (lower case, no parameters) and its ``Content-Length`` as sent:
    the first of each, as ``request.headers.get`` gives it, in one pass over the ASGI scope's
    headers (``request.headers`` would build its ``Headers`` for them first)."""
    content_type = length = None
    for name, value in request.scope["headers"]:
        if name == b"content-type":
            if content_type is None:
                content_type = value
        elif name == b"content-length" and length is None:
            length = value
    media_type = "" if content_type is None else content_type.decode("latin-1")
    return (
        media_type.split(";", 1)[0].strip().lower(),
        None if length is None else length.decode("latin-1"),
    )


async def read_body_fields(
    request: Request, *, max_bytes: int = MAX_BODY_BYTES
) -> Mapping[str, Any] | None:
    """The fields of a JSON object or form body; None for other bodies.

    Raises ``InvalidRequestError`` when the body claims to be JSON or a form and is not, or
    holds text that is not Unicode (a lone surrogate), and ``RequestTooLargeError`` (413) when
    it is longer than ``max_bytes``. The work is linear in the body's size whatever its shape.
    """
    content_type, length = _content_headers(request)
    is_json = content_type == "application/json" or content_type.endswith("+json")
    if not is_json and content_type not in _FORM_TYPES:
        return None
    declared = _declared_length(length, max_bytes)
    if is_json:
        return _json_fields(await _limited_body(request, declared, max_bytes))
    form = await _limited_form(request, declared, max_bytes)
    for name, value in form.multi_items():
        text = value if isinstance(value, str) else (value.filename or "")
        if not (is_unicode_text(name) and is_unicode_text(text)):
            raise InvalidRequestError(_NOT_UNICODE)
    return form


async def read_body_field(request: Request, name: str, *, max_bytes: int = MAX_BODY_BYTES) -> Any:
    """``single_field`` of ``read_body_fields``, the same answer and the same errors: a JSON
    body of that one member holding a string with no escape (what clients send) is read
    without parsing it as JSON."""
    content_type, length = _content_headers(request)
    if content_type == "application/json":
        body = await _limited_body(request, _declared_length(length, max_bytes), max_bytes)
        found = _lone_member(name).fullmatch(body)
        if found is not None:
            return found.group(1).decode("ascii")
        fields = _json_fields(body)
    else:
        fields = await read_body_fields(request, max_bytes=max_bytes)
    return single_field(fields, name) if fields is not None else None


_JSON_SPACE = rb"[ \t\n\r]*"
# JSON string content that reads as itself: printable ASCII but the quote and the backslash.
_PLAIN_STRING = rb'"([\x20\x21\x23-\x5b\x5d-\x7e]*)"'


@functools.lru_cache(maxsize=64)
def _lone_member(name: str) -> re.Pattern[bytes]:
    # {"<name>":"<plain string>"} with JSON's whitespace: no other member, so none repeated.
    # A name json.dumps escapes matches nothing here and is parsed (its raw UTF-8 is valid too).
    member = re.escape(json.dumps(name).encode())
    return re.compile(
        _JSON_SPACE + rb"\{" + _JSON_SPACE + member + _JSON_SPACE + rb":" + _JSON_SPACE
        + _PLAIN_STRING + _JSON_SPACE + rb"\}" + _JSON_SPACE
    )  # fmt: skip


_NOT_UNICODE = "The request body holds text that is not valid Unicode"
# Where a body read here without a Content-Length is kept for the rest of the request: once
# the stream is read, Starlette cannot give it again.
_BODY_STATE = "auth_refresh_body"


def _declared_length(declared: str | None, max_bytes: int) -> int | None:
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


class BodyFieldExtractor:
    """The token from a field of a JSON or form body (the original's default: ``refreshToken``)."""

    def __init__(self, field: str = "refreshToken") -> None:
        self.field = field

    async def __call__(self, request: Request) -> str | None:
        token = await read_body_field(request, self.field)
        return token if isinstance(token, str) and token else None

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
