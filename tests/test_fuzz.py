"""Property-based: whatever arrives, the answer is a documented 4xx, never a 5xx, never a token.

Hypothesis sends arbitrary token strings (random text, random base64url segments, mutations of
real tokens, and tokens correctly signed over arbitrary headers and claims) and arbitrary
bodies to the refresh route and to an access-token route. No user exists, so even a token
that verifies cannot produce a 200: any 2xx would be a bug.
"""

from __future__ import annotations

import json
import string

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from auth_refresh import InvalidTokenError, JwtModule
from conftest import ACCESS_SECRET, REFRESH_SECRET, InMemoryUsers, serve
from forgery import ACCESS, REFRESH, Target, assert_no_token, b64, build_app, claims, forge

pytestmark = [pytest.mark.anyio, pytest.mark.fuzz]

DOCUMENTED_STATUSES = {400, 401, 413}
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SECRETS = {"access": ACCESS_SECRET.encode(), "refresh": REFRESH_SECRET.encode()}
BASE64URL = string.ascii_letters + string.digits + "-_"
PRINTABLE = "".join(chr(code) for code in range(0x21, 0x7F))

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
header_names = st.sampled_from(["alg", "typ", "kid", "crit", "jku", "jwk", "x5c", "b64", "cty"])
claim_names = st.sampled_from(["sub", "iat", "exp", "nbf", "jti", "iss", "aud", "x"])


@st.composite
def signed_tokens(draw: st.DrawFn, token_type: str) -> str:
    """Correctly signed with the configured secret, over arbitrary header and claims."""
    header = draw(st.dictionaries(header_names, json_values, max_size=5))
    if draw(st.booleans()):
        header |= {"alg": "HS256", "typ": "at+jwt" if token_type == "access" else "rt+jwt"}
    payload = claims() if draw(st.booleans()) else {}
    payload |= draw(st.dictionaries(claim_names, json_values, max_size=5))
    return forge(header, payload, key=SECRETS[token_type], algorithm="HS256")


@st.composite
def mutated_tokens(draw: st.DrawFn, token_type: str) -> str:
    """A real token with characters replaced, inserted or removed."""
    token = forge(
        {"alg": "HS256", "typ": "at+jwt" if token_type == "access" else "rt+jwt"},
        claims(sub="nobody"),
        key=SECRETS[token_type],
        algorithm="HS256",
    )
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        index = draw(st.integers(min_value=0, max_value=len(token)))
        character = draw(st.sampled_from(BASE64URL + ".=+/ "))
        operation = draw(st.sampled_from(["replace", "insert", "delete"]))
        if operation == "insert":
            token = token[:index] + character + token[index:]
        elif operation == "delete":
            token = token[:index] + token[index + 1 :]
        else:
            token = token[:index] + character + token[index + 1 :]
    return token


def segments(alphabet: str) -> st.SearchStrategy[str]:
    raw = st.binary(max_size=200).map(b64)
    return st.lists(raw | st.text(alphabet, max_size=60), min_size=1, max_size=4).map(".".join)


def tokens(token_type: str, alphabet: str) -> st.SearchStrategy[str]:
    return (
        st.text(alphabet=alphabet, max_size=300)
        | segments(alphabet)
        | st.binary(max_size=300).map(lambda data: b64(json.dumps({"x": data.hex()}).encode()))
        | mutated_tokens(token_type)
        | signed_tokens(token_type)
        | st.text(alphabet=alphabet, min_size=8190, max_size=8300)
    )


def assert_documented_refusal(status: int, text: str, token: str) -> None:
    assert status in DOCUMENTED_STATUSES, text
    body = json.loads(text)
    assert body["statusCode"] == status
    assert body["errorCode"].endswith("_ERROR")


async def exchange(target: Target, token: str) -> tuple[int, str]:
    app, _ = build_app(InMemoryUsers())
    async with serve(app) as client:
        response = await target.send(client, token)
        said_anyway = ""
        if any(len(part) >= 8 and part in response.text for part in (token, *token.split("."))):
            # Found in the answer: is it there for any token (Hypothesis tries the answer's own
            # words, "timestam" of "timestamp"), or because this one was sent?
            said_anyway = (await target.send(client, "-" * len(token))).text
    assert_no_token(response, token, said_anyway=said_anyway)
    return response.status_code, response.text


@FUZZ
@given(token=tokens("refresh", string.printable + "éß€\x00\ud7ff"))
async def test_any_token_at_the_refresh_route_gets_a_documented_4xx(token: str) -> None:
    status, text = await exchange(REFRESH, token)
    assert_documented_refusal(status, text, token)


@FUZZ
@given(token=tokens("access", PRINTABLE))
async def test_any_token_at_an_access_route_gets_a_documented_4xx(token: str) -> None:
    status, text = await exchange(ACCESS, token)
    assert_documented_refusal(status, text, token)


content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/merge-patch+json",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "multipart/form-data",
        "text/plain",
        "",
    ]
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "object", "form"]))
    if kind == "bytes":
        return draw(st.binary(max_size=2000))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "object":
        fields = draw(st.dictionaries(st.sampled_from(["refreshToken", "x"]), json_values))
        return json.dumps(fields).encode()
    return draw(st.text(alphabet=BASE64URL + "=&%.", max_size=400)).encode()


@FUZZ
@given(body=bodies(), content_type=content_types)
async def test_any_body_at_the_refresh_route_gets_a_documented_4xx(
    body: bytes, content_type: str
) -> None:
    app, _ = build_app(InMemoryUsers())
    async with serve(app) as client:
        response = await client.post(
            "/auth/refresh", content=body, headers={"Content-Type": content_type}
        )
    assert_documented_refusal(response.status_code, response.text, "")
    assert "accessToken" not in response.text


@FUZZ
@given(authorization=st.text(alphabet=PRINTABLE + " \t", max_size=400))
async def test_any_authorization_header_at_an_access_route_gets_a_documented_4xx(
    authorization: str,
) -> None:
    app, _ = build_app(InMemoryUsers())
    async with serve(app) as client:
        response = await client.get("/me", headers={"Authorization": authorization})
    assert_documented_refusal(response.status_code, response.text, authorization.strip())
    assert "accessToken" not in response.text


def test_the_strategies_reach_past_the_signature_check() -> None:
    # Without this, "never a 5xx" would say little about the claim checks.
    jwt_service = JwtModule.for_root().service
    reasons: set[str] = set()

    @settings(max_examples=200, deadline=None)
    @given(token=signed_tokens("refresh"))
    def collect(token: str) -> None:
        try:
            jwt_service.verify("refresh", token)
        except InvalidTokenError as error:
            reasons.add(error.reason)

    collect()
    assert {"missing_claim", "invalid_claim"} & reasons
    assert "bad_signature" not in reasons
