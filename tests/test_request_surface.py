"""Bodies shaped to cost: parsing is linear in the size, and text that is not Unicode is a 400.

The cost is compared in CPU time of this process, side by side in one run: a shaped body beside
a plain one of the same size, and a shaped body beside the same shape an eighth as long.
"""

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import pytest
from fastapi import FastAPI, Form, Request
from hypothesis import given, settings
from hypothesis import strategies as st

from auth_refresh import AuthRefreshError, AuthRefreshModule, ExtractJwt
from auth_refresh.transport.bodies import (
    MAX_BODY_BYTES,
    read_body_field,
    read_body_fields,
    single_field,
)
from auth_refresh.transport.responses import error_response
from conftest import InMemoryUsers, serve

pytestmark = pytest.mark.anyio

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
BOUNDARY = "b0undary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
# Linear work grows 8x from an eighth of the size; quadratic work grows 64x.
SIZE_STEP = 8
MOST_GROWTH = 24.0
# The repeated-member body cost 120-190x the plain one when names were counted pairwise.
MOST_OVER_PLAIN = 5.0
SIZE = MAX_BODY_BYTES - 64


def repeated(unit: Callable[[int], str], size: int, *, separator: str = "") -> str:
    """``unit(0)``, ``unit(1)``, ... joined by ``separator``, at most ``size`` characters."""
    parts: list[str] = []
    length = 0
    while length + len(next_part := unit(len(parts))) + len(separator) <= size:
        parts.append(next_part)
        length += len(next_part) + len(separator)
    return separator.join(parts)


def members(size: int, *, repeat: bool = False) -> bytes:
    """A JSON object of distinct members, and one of them again when ``repeat``."""
    body = repeated(lambda i: f'"{i:x}":0', size - 16, separator=",")
    return ("{" + body + (',"0":1' if repeat else "") + "}").encode()


def nested(size: int) -> bytes:
    depth = size // 6
    return b'{"a":' * depth + b"0" + b"}" * depth


def fields(value_length: int) -> Callable[[int], bytes]:
    return lambda size: repeated(
        lambda i: f"f{i:05d}=" + "v" * value_length, size, separator="&"
    ).encode()


def parts(value_length: int) -> Callable[[int], bytes]:
    end = f"--{BOUNDARY}--\r\n"

    def part(i: int) -> str:
        disposition = f'Content-Disposition: form-data; name="p{i}"'
        return f"--{BOUNDARY}\r\n{disposition}\r\n\r\n{'v' * value_length}\r\n"

    return lambda size: (repeated(part, size - len(end)) + end).encode()


def request_with(body: bytes, content_type: str) -> Request:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
    ]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return Request({"type": "http", "method": "POST", "headers": headers}, receive)


async def cpu_seconds(body: bytes, content_type: str) -> float:
    """The least CPU time of a few reads of ``body``; refusals count as much as answers."""
    assert len(body) <= MAX_BODY_BYTES
    best = float("inf")
    for _ in range(7):
        request = request_with(body, content_type)
        started = time.process_time()
        with contextlib.suppress(AuthRefreshError):
            await read_body_fields(request)
        best = min(best, time.process_time() - started)
    return max(best, 1e-6)


SHAPES: list[tuple[str, Callable[[int], bytes], str]] = [
    ("many members", members, JSON),
    ("repeated members", lambda size: members(size, repeat=True), JSON),
    ("deep nesting", nested, JSON),
    # Starlette parses at most 1000 fields or parts: below that, and far beyond it.
    ("many fields", fields(60), FORM),
    ("fields beyond the cap", fields(1), FORM),
    ("many parts", parts(20), MULTIPART),
    ("parts beyond the cap", parts(1), MULTIPART),
]


@pytest.mark.parametrize(("shape", "shaped", "content_type"), SHAPES, ids=lambda x: x)
async def test_parsing_cost_grows_linearly_with_the_size_for_every_shape(
    shape: str, shaped: Callable[[int], bytes], content_type: str
) -> None:
    smaller = await cpu_seconds(shaped(SIZE // SIZE_STEP), content_type)
    full = await cpu_seconds(shaped(SIZE), content_type)
    assert full / smaller < MOST_GROWTH, (shape, smaller, full)


async def test_the_64_kib_repeated_member_body_costs_about_what_a_plain_one_does() -> None:
    """The attack of issue 11: ~8,600 distinct members and one repeated, at the limit."""
    attack, plain = members(SIZE, repeat=True), members(SIZE)
    attack_cost = await cpu_seconds(attack, JSON)
    plain_cost = await cpu_seconds(plain, JSON)
    assert attack_cost / plain_cost < MOST_OVER_PLAIN, (attack_cost, plain_cost)


async def test_the_repeated_member_body_is_a_400_at_the_refresh_route(
    users: InMemoryUsers,
) -> None:
    app = FastAPI()
    AuthRefreshModule.for_root(user_lookup_service=users, settings={"rotation": False}).attach(app)
    attack = members(SIZE, repeat=True)
    attack = attack[:-1] + b',"refreshToken":"a","refreshToken":"b"}'
    async with serve(app) as client:
        response = await client.post(
            "/auth/refresh", content=attack, headers={"content-type": JSON}
        )
    assert response.status_code == 400, response.text
    assert response.json()["errorCode"] == "AUTH_REFRESH_INVALID_REQUEST_ERROR"


# -- text that is not Unicode ----------------------------------------------------------------


def extractor_app() -> FastAPI:
    extractor = ExtractJwt.from_body_field()
    app = FastAPI()
    app.add_exception_handler(AuthRefreshError, error_response)

    @app.post("/extract")
    async def extract(request: Request) -> dict[str, Any]:
        return {"token": await extractor(request)}

    return app


LONE_SURROGATE_BODIES = [
    (b'{"refreshToken":"\\ud800"}', JSON),
    (b'{"refreshToken":"abc","other":"\\udfff"}', JSON),
    (b'{"refreshToken":"abc","\\ud800":1}', JSON),
    (b'{"refreshToken":"abc","list":[{"deep":["\\udbff"]}]}', JSON),
    (b'{"refreshToken":"abc","reversed":"\\ude00\\ud83d"}', JSON),
    # A form's charset is the client's to name, and some codecs decode escapes.
    (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="refreshToken"\r\n\r\n'
        f"\\ud800\r\n--{BOUNDARY}--\r\n".encode(),
        f"{MULTIPART}; charset=raw_unicode_escape",
    ),
]


@pytest.mark.parametrize(("content", "content_type"), LONE_SURROGATE_BODIES)
@pytest.mark.parametrize("chunked", [False, True])
async def test_a_lone_surrogate_anywhere_in_the_body_is_a_400(
    content: bytes, content_type: str, chunked: bool
) -> None:
    async def stream() -> AsyncIterator[bytes]:
        yield content

    async with serve(extractor_app()) as client:
        response = await client.post(
            "/extract",
            content=stream() if chunked else content,
            headers={"content-type": content_type},
        )
    assert response.status_code == 400, response.text
    assert response.json()["errorCode"] == "AUTH_REFRESH_INVALID_REQUEST_ERROR"


async def test_an_escaped_surrogate_pair_is_text() -> None:
    async with serve(extractor_app()) as client:
        response = await client.post(
            "/extract", content=b'{"refreshToken":"\\ud83d\\ude00"}', headers={"content-type": JSON}
        )
    assert response.status_code == 200
    assert response.json() == {"token": "\N{GRINNING FACE}"}


async def test_a_chunked_form_at_a_route_that_parsed_it_still_gives_the_body_token() -> None:
    extractor = ExtractJwt.from_body_field()
    app = FastAPI()

    @app.post("/with-form")
    async def with_form(request: Request, note: Annotated[str, Form()]) -> dict[str, Any]:
        return {"token": await extractor(request), "note": note}

    async def stream() -> AsyncIterator[bytes]:
        yield b"refreshToken=abc&"
        yield b"note=n"

    async def plain_stream() -> AsyncIterator[bytes]:
        yield b"refreshToken=abc"

    async with serve(app) as client:
        parsed = await client.post("/with-form", content=stream(), headers={"content-type": FORM})
    assert parsed.status_code == 200, parsed.text
    assert parsed.json() == {"token": "abc", "note": "n"}
    async with serve(extractor_app()) as client:
        chunked = await client.post(
            "/extract", content=plain_stream(), headers={"content-type": FORM}
        )
    assert chunked.status_code == 200, chunked.text
    assert chunked.json() == {"token": "abc"}


@pytest.mark.parametrize(
    "content",
    [
        b'{"username":"user@example.com","password":"\\ud800"}',
        b'{"username":"user@example.com\\udc00","password":"password"}',
    ],
)
async def test_a_lone_surrogate_in_login_credentials_is_a_400_before_any_lookup(
    content: bytes,
) -> None:
    from auth_refresh import AuthenticationModule, AuthLocalModule

    class RecordingUsers(InMemoryUsers):
        def __init__(self) -> None:
            super().__init__()
            self.looked_up: list[str] = []

        def by_username(self, username: str) -> Any:
            self.looked_up.append(username)
            username.encode()  # a database driver encodes the name: a 500 if it gets here
            return super().by_username(username)

    users = RecordingUsers()
    app = FastAPI()
    AuthLocalModule.for_root(
        user_lookup_service=users,
        issue_token_service=AuthenticationModule.for_root().issue_token_service,
    ).attach(app)
    async with serve(app) as client:
        response = await client.post("/auth/login", content=content, headers={"content-type": JSON})
    assert response.status_code == 400, response.text
    assert response.json()["errorCode"] == "AUTH_REFRESH_INVALID_REQUEST_ERROR"
    assert users.looked_up == []
    assert "ud800" not in response.text


# Pieces of JSON bodies near the one member clients send: JSON's whitespace and others, escapes,
# quotes, non-ASCII, a repeated or a second member, a field name spelt with an escape.
BODY_PIECES = st.sampled_from(
    ["{", "}", '"refreshToken"', '"refresh\\u0054oken"', ":", ",", '"', "a.b-c_9", " ", "\t",
     "\n", "\r", "\x0c", "\\", '\\"', "\\u00e9", "é", "\\ud800", "[]", "0", "null", "~"]
)  # fmt: skip


SPACES = st.sampled_from(["", " ", "\t", "\n\r", "\x0c", "\xa0"])
VALUES = st.lists(
    st.sampled_from(["a.b", "-_", '"', "\\\\", '\\"', "é", "\\u00e9", " ", "~", "\x7f", "\x00"]),
    max_size=4,
).map("".join)
# The member clients send, with its variations: where most bodies take the quick way.
NEAR_MEMBER = st.builds(
    lambda a, b, c, value, d, tail: a + "{" + b + '"refreshToken"' + c + ":" + a + f'"{value}"'
    + d + "}" + tail,
    SPACES, SPACES, SPACES, VALUES, SPACES, st.sampled_from(["", " ", ",", "}", '"x"']),
)  # fmt: skip


@given(st.one_of(NEAR_MEMBER, st.lists(BODY_PIECES, max_size=14).map("".join)))
@settings(max_examples=400, deadline=None)
def test_the_one_field_reader_answers_as_the_full_parse_does(text: str) -> None:
    import asyncio

    async def outcome(read: Callable[[Request], Any]) -> object:
        try:
            return ("value", await read(request_with(text.encode(), JSON)))
        except AuthRefreshError as error:
            return ("refused", type(error), error.status_code)

    async def full(request: Request) -> Any:
        found = await read_body_fields(request)
        return single_field(found, "refreshToken") if found is not None else None

    fast = asyncio.run(outcome(lambda request: read_body_field(request, "refreshToken")))
    assert fast == asyncio.run(outcome(full))


@pytest.mark.parametrize(
    "body", [b'{"refreshToken":"a.b.c"}', b' \r\n{ "refreshToken" :\t"a.b.c" }\n']
)
async def test_the_member_clients_send_is_read(body: bytes) -> None:
    assert await read_body_field(request_with(body, JSON), "refreshToken") == "a.b.c"
