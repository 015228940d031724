"""Schemathesis against the applications' own OpenAPI schemas, in-process over ASGI.

Every example goes through Schemathesis' whole run (its engine, as ``st run --checks all``
runs it: examples, coverage, fuzzing and stateful phases, every check), with real tokens: a
login, then a refresh for each generated request, so the refresh, logout, session and
access-token routes answer 200s and 204s the checks can hold against the schema; the token
endpoint's valid forms get the demo user's password or a live refresh token; with cookie
transport (the browser example), the refresh cookie, its CSRF header and the client's origin.
The forgery app (with the JWKS) gets requests that fit the schema and requests that violate
it; none may answer with a server error.

Schemathesis' lazy pytest loader (``from_fixture``) does not run under pytest 9, so the schema
is loaded inside the test and each operation's strategy is driven by Hypothesis directly.
"""

from __future__ import annotations

import runpy
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any

import pytest
import schemathesis

# Imported now, at a shallow stack: pytest's assertion rewriting of this large module deep in a
# test's stack trips CPython 3.11's "AST constructor recursion depth mismatch".
import schemathesis.specs.openapi.schemas
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.engine import events, from_schema
from schemathesis.python import asgi
from starlette.responses import JSONResponse, Response

from auth_refresh import AuthLocalModule, JwtModule, jwks_router
from auth_refresh.transport.cookies import CSRF_HEADER
from conftest import InMemoryUsers, User
from forgery import build_app
from servers import ROOT

pytestmark = pytest.mark.fuzz

SCHEMATHESIS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)


def load_schema(users: InMemoryUsers, password_storage: Any) -> Any:
    app, _ = build_app(users)
    AuthLocalModule.for_root(
        user_lookup_service=users, password_storage_service=password_storage
    ).attach(app)
    app.include_router(jwks_router(JwtModule.for_root().service))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=str)
def test_no_operation_answers_with_a_server_error(
    mode: schemathesis.GenerationMode, users: InMemoryUsers, password_storage: Any
) -> None:
    schema = load_schema(users, password_storage)
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {operation.label for operation in operations}
    assert labels == {
        "POST /auth/refresh",
        "POST /auth/login",
        "GET /me",
        "GET /.well-known/jwks.json",
    }
    statuses: set[int] = set()
    exercised: set[str] = set()
    for operation in operations:

        @SCHEMATHESIS
        @given(case=operation.as_strategy(generation_mode=mode))
        def exchange(case: schemathesis.Case) -> None:
            response = case.call()
            statuses.add(response.status_code)
            case.validate_response(response, checks=[not_a_server_error])

        try:
            exchange()
        except Unsatisfiable:
            # An operation without parameters or body has no schema-violating request.
            assert mode is schemathesis.GenerationMode.NEGATIVE
            continue
        exercised.add(operation.label)
    assert {"POST /auth/refresh", "POST /auth/login"} <= exercised
    # The requests reached the routes' own checks, not just the framework's 404/405.
    assert statuses & {400, 401}


def test_the_schema_documents_the_error_answers(
    users: InMemoryUsers, password_storage: Any
) -> None:
    schema = load_schema(InMemoryUsers(User("user-1", "user@example.com")), password_storage)
    document = schema.raw_schema
    refresh = document["paths"]["/auth/refresh"]["post"]
    assert {"200", "400", "401"} <= set(refresh["responses"])
    assert document["paths"]["/.well-known/jwks.json"]["get"]["responses"]["200"]["content"]


def test_the_harness_notices_a_server_error() -> None:
    # Without this, a harness that never checked anything would pass the test above.
    app = FastAPI()

    @app.get("/broken", operation_id="broken")
    async def broken() -> Response:
        return JSONResponse({"statusCode": 500}, status_code=500)

    [operation] = [
        result.ok()
        for result in schemathesis.openapi.from_asgi("/openapi.json", app).get_all_operations()
    ]

    @settings(max_examples=1, database=None, deadline=None)
    @given(case=operation.as_strategy())
    def exchange(case: schemathesis.Case) -> None:
        case.validate_response(case.call(), checks=[not_a_server_error])

    with pytest.raises(FailureGroup) as caught:
        exchange()
    assert [type(failure).__name__ for failure in caught.value.exceptions] == ["ServerError"]


# -- the examples, every check ------------------------------------------------------------------

# Each example's routes beside the ones every example serves; they must each answer a 200.
EXAMPLES = {
    # Its readiness route and the OAuth 2.0 token endpoint too.
    "examples.sync_registration.app": {
        "POST /auth/mobile/refresh",
        "GET /health/ready",
        "POST /auth/token",
    },
    "examples.async_registration.app": {"POST /auth/mobile/refresh"},
    # Cookie transport: the refresh token travels in its cookie, with the CSRF header.
    "examples.browser_session.app": {"GET /page-settings"},
}
SHARED_ROUTES = {
    "POST /auth/login",
    "POST /auth/refresh",
    "POST /auth/logout",
    "GET /me",
    "GET /auth/sessions",
    "POST /auth/sessions/revoke-others",
    "DELETE /auth/sessions/{session_id}",
}
DEMO_CREDENTIALS = {"username": "user@example.com", "password": "password"}
# The test client's own origin: the cookie transport refuses requests from any other.
ORIGIN = {"Origin": f"http://{asgi.HOST}"}
# The cost of a run: each operation gets its coverage cases and this many fuzzed ones; a seed,
# so a run is the same run each time.
ENGINE_CONFIG = {
    "checks": {"enabled": True},
    "generation": {"max-examples": 5},
    "seed": 23,
    "workers": 1,
}


@dataclass
class Tokens:
    """A fresh pair for each generated request: a refresh of one login's token family.

    Rotation makes each refresh token single-use, so the family's next refresh token is the one
    the last answer carried (``answered``); when a request ended the family (a logout, a session
    revoked), the next pair is a new login. With cookie transport (``cookie``, the refresh
    cookie's name) the refresh token comes in that cookie and goes back in it, with the
    session's CSRF token and the client's own origin.
    """

    app: Any
    cookie: str | None = None
    refresh_token: str | None = None
    csrf_token: str = ""
    logins: int = 0

    def pair(self) -> dict[str, str]:
        with asgi.get_client(self.app) as client:
            if self.refresh_token is not None:
                refreshed = client.post("/auth/refresh", **self.presenting(self.refresh_token))
                if refreshed.status_code == 200:
                    return self._keep(refreshed.json(), refreshed.raw.headers.getlist("set-cookie"))
            login = client.post("/auth/login", json=DEMO_CREDENTIALS, headers=ORIGIN)
            assert login.status_code == 200, login.text
            self.logins += 1
            return self._keep(login.json(), login.raw.headers.getlist("set-cookie"))

    def presenting(self, refresh_token: str) -> dict[str, Any]:
        """How a request carries ``refresh_token``: the arguments of ``client.post``."""
        if self.cookie is None:
            return {"json": {"refreshToken": refresh_token}}
        headers = {**ORIGIN, CSRF_HEADER: self.csrf_token}
        return {"cookies": {self.cookie: refresh_token}, "headers": headers}

    def answered(self, response: schemathesis.Response) -> None:
        # Schemathesis' headers are lists under lowercase names.
        [content_type] = response.headers.get("content-type") or [""]
        if response.status_code == 200 and "json" in content_type:
            answer = response.json()
            successor = self._refresh_token_in(answer, response.headers.get("set-cookie", []))
            if successor is not None:
                self.refresh_token = successor

    def _refresh_token_in(self, answer: Any, set_cookies: list[str]) -> str | None:
        token = None
        if isinstance(answer, dict):
            # The token endpoint answers in RFC 6749's names: its rotation is kept too, or the
            # next refresh would replay a spent token and reuse detection end the family.
            token = answer.get("refreshToken") or answer.get("refresh_token")
        for header in set_cookies if self.cookie is not None else ():
            cookie = SimpleCookie(header)
            if self.cookie in cookie and cookie[self.cookie].value:  # a logout's is empty
                token = cookie[self.cookie].value
        return token if isinstance(token, str) and token else None

    def _keep(self, answer: dict[str, str], set_cookies: list[str]) -> dict[str, str]:
        # The request is given this refresh token; until its answer says otherwise, it is next.
        token = self._refresh_token_in(answer, set_cookies)
        assert token is not None, answer
        self.refresh_token = token
        # The CSRF token is the session's: a login's holds for its refreshes.
        self.csrf_token = answer.get("csrfToken", self.csrf_token)
        return {"accessToken": answer["accessToken"], "refreshToken": token}


def security_of(case: schemathesis.Case) -> set[str]:
    operation = case.operation.definition.raw
    return {name for requirement in operation.get("security", ()) for name in requirement}


def cookie_schemes(schema: Any) -> dict[str, str]:
    """The schema's security schemes that are cookies, by name: their cookie's name."""
    schemes = schema.raw_schema.get("components", {}).get("securitySchemes", {})
    return {
        name: scheme["name"]
        for name, scheme in schemes.items()
        if scheme.get("type") == "apiKey" and scheme.get("in") == "cookie"
    }


def reads_refresh_token_from_body(case: schemathesis.Case) -> bool:
    content = case.operation.definition.raw.get("requestBody", {}).get("content", {})
    return any(
        "refreshToken" in media.get("schema", {}).get("properties", {})
        for media in content.values()
    )


def is_positive(case: schemathesis.Case) -> bool:
    return case.meta is not None and case.meta.generation.mode.is_positive


def grant_of(case: schemathesis.Case) -> str | None:
    """The ``grant_type`` of a valid token request (the OAuth 2.0 token endpoint's form)."""
    if not (is_positive(case) and isinstance(case.body, dict)):
        return None
    grant = case.body.get("grant_type")
    return grant if isinstance(grant, str) else None


@dataclass
class ExampleRun:
    failures: list[str] = field(default_factory=list)
    answers: set[tuple[str, int]] = field(default_factory=set)
    # The token endpoint's answers by grant_type, for the valid requests.
    grants: set[tuple[str, int]] = field(default_factory=set)
    logins: int = 0


def run_every_check(app: FastAPI) -> ExampleRun:
    config = schemathesis.Config.from_dict(ENGINE_CONFIG)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    cookies = cookie_schemes(schema)
    tokens = Tokens(app, cookie=next(iter(cookies.values()), None))
    run = ExampleRun()

    @schema.auth(refresh_interval=None)
    class ExampleAuth:
        def get(self, case: schemathesis.Case, context: Any) -> dict[str, str]:
            if security_of(case) or reads_refresh_token_from_body(case):
                return tokens.pair()
            if grant_of(case) == "refresh_token":
                return tokens.pair()
            return {}  # the login, the password grant: no token to give

        def set(self, case: schemathesis.Case, pair: dict[str, str], context: Any) -> None:
            schemes = security_of(case)
            if grant_of(case) == "password":
                # The form's username and password are otherwise random: never a 200.
                case.body = {**case.body, **DEMO_CREDENTIALS}
            if not pair:
                return
            if "AccessToken" in schemes:
                case.headers = {
                    **(case.headers or {}),
                    "Authorization": "Bearer " + pair["accessToken"],
                }
            if "RefreshToken" in schemes:
                case.headers = {
                    **(case.headers or {}),
                    "Authorization": "Bearer " + pair["refreshToken"],
                }
            if schemes & cookies.keys() and is_positive(case):
                # Only with a valid body: the cookie's token counts whatever the body holds (a
                # refreshToken that is null or missing is no token), so it would pass any body.
                presented = tokens.presenting(pair["refreshToken"])
                case.cookies = {**(case.cookies or {}), **presented["cookies"]}
                case.headers = {**(case.headers or {}), **presented["headers"]}
            positive = is_positive(case)
            if positive and reads_refresh_token_from_body(case) and isinstance(case.body, dict):
                # Only where the body is valid: a negative case's body must stay invalid.
                case.body = {**case.body, "refreshToken": pair["refreshToken"]}
            if grant_of(case) == "refresh_token":
                case.body = {**case.body, "refresh_token": pair["refreshToken"]}

    @schema.hook
    def after_call(context: Any, case: schemathesis.Case, response: Any) -> None:
        run.answers.add((case.operation.label, response.status_code))
        grant = grant_of(case)
        if grant is not None:
            run.grants.add((grant, response.status_code))
        tokens.answered(response)

    try:
        for event in from_schema(schema).execute():
            run.failures.extend(failures_in(event))
    finally:
        asgi.shutdown_lifespans()
    run.logins = tokens.logins
    return run


def failures_in(event: events.EngineEvent) -> Iterator[str]:
    if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
        for nodes in event.recorder.checks.values():
            for node in nodes:
                if node.failure_info is not None:
                    failure = node.failure_info.failure
                    yield (
                        f"{event.recorder.label}: {node.name}: {failure.title}\n"
                        f"{failure.message}\n{node.failure_info.code_sample}"
                    )
    elif isinstance(event, events.NonFatalError):
        yield f"{event.label}: {event.info.title}: {event.value!r}"
    elif isinstance(event, events.FatalError):
        yield f"fatal: {event.exception!r}"


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_check_passes_over_every_route_of_the_example(example: str) -> None:
    # A namespace of its own each time (a module another test imported is left alone).
    app = runpy.run_path(str(ROOT / example.replace(".", "/")) + ".py")["app"]
    run = run_every_check(app)
    assert run.failures == []
    assert {label for label, _ in run.answers} == SHARED_ROUTES | EXAMPLES[example]
    # The tokens worked: every route answered as it does for a client that holds them.
    assert {
        ("POST /auth/refresh", 200),
        ("POST /auth/logout", 204),
        ("GET /me", 200),
        ("GET /auth/sessions", 200),
        ("POST /auth/sessions/revoke-others", 204),
        *((label, 200) for label in EXAMPLES[example]),
    } <= run.answers
    if "POST /auth/token" in EXAMPLES[example]:
        assert {("password", 200), ("refresh_token", 200)} <= run.grants
