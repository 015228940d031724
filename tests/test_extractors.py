"""Every extractor, driven over HTTP: what each finds, and what counts as no token."""

from typing import Annotated, Any

import pytest
from fastapi import FastAPI, Form, Request

from auth_refresh import AuthRefreshError, ExtractJwt
from auth_refresh.transport.extractors import Extractor, TokenExtractor
from auth_refresh.transport.responses import error_response
from conftest import serve

pytestmark = pytest.mark.anyio


def extractor_app(extractor: TokenExtractor) -> FastAPI:
    app = FastAPI()
    app.add_exception_handler(AuthRefreshError, error_response)

    @app.post("/extract")
    async def extract(request: Request) -> dict[str, Any]:
        result = extractor(request)
        token = await result if not isinstance(result, str | None) else result
        return {"token": token}

    return app


async def extracted(extractor: TokenExtractor, **request: Any) -> Any:
    async with serve(extractor_app(extractor)) as client:
        response = await client.post("/extract", **request)
    assert response.status_code == 200, response.text
    return response.json()["token"]


async def test_body_field_reads_json_and_forms() -> None:
    extractor = ExtractJwt.from_body_field()
    assert await extracted(extractor, json={"refreshToken": "abc"}) == "abc"
    assert await extracted(extractor, data={"refreshToken": "abc"}) == "abc"
    assert await extracted(extractor, files={"refreshToken": (None, "abc")}) == "abc"
    assert await extracted(ExtractJwt.from_body_field("token"), json={"token": "t"}) == "t"
    assert await extracted(extractor, json={"refreshToken": "abc"}, params={"x": "1"}) == "abc"
    vendor_json = {"content": b'{"refreshToken": "v"}', "headers": {"content-type": "x/y+json"}}
    assert await extracted(extractor, **vendor_json) == "v"


@pytest.mark.parametrize("value", [None, "", 123, 1.5, True, ["abc"], {"token": "abc"}], ids=repr)
async def test_body_field_values_that_are_not_non_empty_strings_are_no_token(value: Any) -> None:
    assert await extracted(ExtractJwt.from_body_field(), json={"refreshToken": value}) is None


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'["refreshToken"]', "application/json"),
        (b'"abc"', "application/json"),
        (b"", "application/json"),
        (b"refreshToken=abc", "text/plain"),
        (b'{"refreshToken": "abc"}', "application/xml"),
        (b'{"refreshToken": "abc"}', None),
    ],
)
async def test_bodies_that_carry_no_token_field(content: bytes, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    found = await extracted(ExtractJwt.from_body_field(), content=content, headers=headers)
    assert found is None


@pytest.mark.parametrize(
    "content",
    # Deep nesting within the 64 KiB body limit (larger bodies are a 413).
    [
        b"{",
        b'{"refreshToken": }',
        b"\xff\xfe\x00",
        b"[" * 30_000 + b"]" * 30_000,
        b'{"refreshToken": NaN}',
        b'{"refreshToken": "t", "n": -Infinity}',
    ],
    ids=["truncated", "invalid", "not-utf8", "deeply-nested", "nan", "infinity"],
)
async def test_a_malformed_json_body_is_a_400(content: bytes) -> None:
    async with serve(extractor_app(ExtractJwt.from_body_field())) as client:
        response = await client.post(
            "/extract", content=content, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert response.json()["errorCode"] == "AUTH_REFRESH_INVALID_REQUEST_ERROR"


async def test_a_malformed_multipart_body_is_a_400() -> None:
    async with serve(extractor_app(ExtractJwt.from_body_field())) as client:
        response = await client.post(
            "/extract",
            content=b"--xyz\r\nbroken",
            headers={"content-type": "multipart/form-data"},  # no boundary
        )
    assert response.status_code == 400


async def test_header() -> None:
    extractor = ExtractJwt.from_header("x-refresh-token")
    assert await extracted(extractor, headers={"X-Refresh-Token": "abc"}) == "abc"
    assert await extracted(extractor, headers={"x-refresh-token": ""}) is None
    assert await extracted(extractor) is None


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
async def test_auth_header_scheme_matches_in_any_case(scheme: str) -> None:
    headers = {"Authorization": f"{scheme} abc"}
    assert await extracted(ExtractJwt.from_auth_header_as_bearer_token(), headers=headers) == "abc"
    custom = ExtractJwt.from_auth_header_with_scheme("JWT")
    assert await extracted(custom, headers={"Authorization": "jwt abc"}) == "abc"


@pytest.mark.parametrize(
    "authorization", ["Basic abc", "Bearer", "Bearer ", "abc", "Bearer a b", "Bearerabc"]
)
async def test_auth_header_without_exactly_scheme_and_token_is_no_token(
    authorization: str,
) -> None:
    headers = {"Authorization": authorization}
    found = await extracted(ExtractJwt.from_auth_header_as_bearer_token(), headers=headers)
    assert found is None


async def test_url_query_parameter() -> None:
    extractor = ExtractJwt.from_url_query_parameter("refresh_token")
    assert await extracted(extractor, params={"refresh_token": "abc"}) == "abc"
    assert await extracted(extractor, params={"refresh_token": ""}) is None
    assert await extracted(extractor, params={"other": "abc"}) is None


async def test_cookie() -> None:
    extractor = ExtractJwt.from_cookie("refresh")
    assert await extracted(extractor, headers={"Cookie": "refresh=abc; other=x"}) == "abc"
    assert await extracted(extractor, headers={"Cookie": "other=x"}) is None


async def test_from_extractors_takes_the_one_that_finds_a_token() -> None:
    def custom(request: Request) -> str | None:  # plain sync callables are extractors too
        return request.headers.get("x-custom")

    chain = ExtractJwt.from_extractors(
        [ExtractJwt.from_auth_header_as_bearer_token(), ExtractJwt.from_body_field(), custom]
    )
    assert await extracted(chain, json={"refreshToken": "body"}) == "body"
    assert await extracted(chain, headers={"Authorization": "Bearer hdr"}) == "hdr"
    assert await extracted(chain, headers={"x-custom": "c"}) == "c"
    assert await extracted(chain) is None
    same_twice = {"headers": {"Authorization": "Bearer t"}, "json": {"refreshToken": "t"}}
    assert await extracted(chain, **same_twice) == "t"


async def test_from_extractors_refuses_two_different_tokens() -> None:
    chain = ExtractJwt.from_extractors(
        [ExtractJwt.from_auth_header_as_bearer_token(), ExtractJwt.from_body_field()]
    )
    async with serve(extractor_app(chain)) as client:
        response = await client.post(
            "/extract",
            headers={"Authorization": "Bearer token-a"},
            json={"refreshToken": "token-b"},
        )
    assert response.status_code == 400
    assert response.json()["errorCode"] == "AUTH_REFRESH_INVALID_REQUEST_ERROR"
    assert "token-a" not in response.text
    assert "token-b" not in response.text


def test_built_in_extractors_describe_themselves_for_openapi() -> None:
    chain = ExtractJwt.from_extractors(
        [
            ExtractJwt.from_body_field(),
            ExtractJwt.from_header("x-token"),
            ExtractJwt.from_url_query_parameter("t"),
            ExtractJwt.from_cookie("c"),
        ]
    )
    assert isinstance(chain, Extractor)
    description = chain.openapi()
    locations = {(p["in"], p["name"], p["required"]) for p in description["parameters"]}
    assert locations == {
        ("header", "x-token", False),
        ("query", "t", False),
        ("cookie", "c", False),
    }
    assert description["requestBody"]["required"] is False
    body_schema = description["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema["properties"] == {"refreshToken": {"type": "string"}}
    # Extractors before the body one leave the body to it, whatever their order.
    cookie_first = ExtractJwt.from_extractors(
        [ExtractJwt.from_cookie("c"), ExtractJwt.from_body_field()]
    )
    assert isinstance(cookie_first, Extractor)
    assert cookie_first.openapi()["requestBody"] == description["requestBody"]


async def test_a_route_that_parsed_the_form_itself_still_gives_the_body_token() -> None:
    """FastAPI reads Form() and File() parameters before the dependencies run; the stream is
    spent by then."""
    extractor = ExtractJwt.from_body_field()
    app = FastAPI()

    @app.post("/with-form")
    async def with_form(request: Request, note: Annotated[str, Form()]) -> dict[str, Any]:
        return {"token": await extractor(request), "note": note}

    async with serve(app) as client:
        form = await client.post("/with-form", data={"refreshToken": "abc", "note": "n"})
        multipart = await client.post(
            "/with-form", files={"refreshToken": (None, "abc"), "note": (None, "n")}
        )
    for response in (form, multipart):
        assert response.status_code == 200, response.text
        assert response.json() == {"token": "abc", "note": "n"}
