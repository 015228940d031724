"""Bodies shaped to cost: parsing is linear in the size, and text that is not Unicode is a 400.

The cost is compared in CPU time of this process, side by side in one run: a shaped body beside
a plain one of the same size, and a shaped body beside the same shape a quarter as long.
"""

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import pytest
from fastapi import FastAPI, Form, Request

from auth_refresh import AuthRefreshError, AuthRefreshModule, ExtractJwt
from auth_refresh.extractors import MAX_BODY_BYTES, read_body_fields
from auth_refresh.responses import error_response
from conftest import InMemoryUsers, serve

pytestmark = pytest.mark.anyio

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
BOUNDARY = "b0undary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
# Linear work grows 4x from a quarter of the size; quadratic work grows 16x.
MOST_GROWTH = 8.0
# The repeated-member body cost 120-190x the plain one when names were counted pairwise.
MOST_OVER_PLAIN = 5.0


def members(size: int, *, repeat: bool = False) -> bytes:
    """A JSON object of at most size bytes with distinct member names, one of them repeated."""
    names, length = [], 16
    while length < size:
        name = f'"{len(names):x}":0'
        names.append(name)
        length += len(name) + 1
    return ("{" + ",".join(names) + (',"0":1' if repeat else "") + "}").encode()


def plain_json(size: int) -> bytes:
    return b'{"refreshToken":"' + b"a" * (size - 20) + b'"}'


def nested(size: int) -> bytes:
    return b'{"a":' * (size // 5) + b"0" + b"}" * (size // 5)


def form_fields(size: int) -> bytes:
    return "&".join(f"f{i:05d}=1" for i in range(size // 9)).encode()


def plain_form(size: int) -> bytes:
    return b"refreshToken=" + b"a" * (size - 13)


def multipart_parts(size: int) -> bytes:
    part = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="p"\r\n\r\nv\r\n'.encode()
    return part * (size // len(part)) + f"--{BOUNDARY}--\r\n".encode()


def plain_multipart(size: int) -> bytes:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="refreshToken"\r\n\r\n'
    tail = f"\r\n--{BOUNDARY}--\r\n"
    return head.encode() + b"a" * (size - len(head) - len(tail)) + tail.encode()


def request_with(body: bytes, content_type: str, *, chunked: bool = False) -> Request:
    headers = [(b"content-type", content_type.encode())]
    if not chunked:
        headers.append((b"content-length", str(len(body)).encode()))
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        chunk, sent = (b"" if sent else body), True
        return {"type": "http.request", "body": chunk, "more_body": False}

    return Request({"type": "http", "method": "POST", "headers": headers}, receive)


async def cpu_seconds(body: bytes, content_type: str) -> float:
    """The least CPU time of a few reads of ``body``; refusals count as much as answers."""
    best = float("inf")
    for _ in range(5):
        request = request_with(body, content_type)
        started = time.process_time()
        with contextlib.suppress(AuthRefreshError):
            await read_body_fields(request)
        best = min(best, time.process_time() - started)
    return max(best, 1e-6)


SHAPES: list[tuple[str, Callable[[int], bytes], Callable[[int], bytes], str]] = [
    ("repeated members", lambda size: members(size, repeat=True), plain_json, JSON),
    ("deep nesting", nested, plain_json, JSON),
    ("many fields", form_fields, plain_form, FORM),
    ("many parts", multipart_parts, plain_multipart, MULTIPART),
]


@pytest.mark.parametrize(("shape", "shaped", "plain", "content_type"), SHAPES, ids=lambda x: x)
async def test_parsing_cost_grows_linearly_with_the_size_for_every_shape(
    shape: str,
    shaped: Callable[[int], bytes],
    plain: Callable[[int], bytes],
    content_type: str,
) -> None:
    size = MAX_BODY_BYTES - 64
    quarter = await cpu_seconds(shaped(size // 4), content_type)
    full = await cpu_seconds(shaped(size), content_type)
    assert full / quarter < MOST_GROWTH, (shape, quarter, full)


async def test_the_64_kib_repeated_member_body_costs_about_what_a_plain_one_does() -> None:
    """The attack of issue 11: ~8,600 distinct members and one repeated, at the limit."""
    size = MAX_BODY_BYTES - 64
    attack, plain = members(size, repeat=True), members(size)
    assert len(attack) <= MAX_BODY_BYTES
    attack_cost = await cpu_seconds(attack, JSON)
    plain_cost = await cpu_seconds(plain, JSON)
    assert attack_cost / plain_cost < MOST_OVER_PLAIN, (attack_cost, plain_cost)


async def test_the_repeated_member_body_is_a_400_at_the_refresh_route(
    users: InMemoryUsers,
) -> None:
    app = FastAPI()
    AuthRefreshModule.for_root(user_lookup_service=users, settings={"rotation": False}).attach(app)
    attack = members(MAX_BODY_BYTES - 64, repeat=True)
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
