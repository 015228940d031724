"""Schemathesis against the application's own OpenAPI schema, in-process over ASGI.

Every operation (login, refresh, an access-token route, the JWKS) gets requests that fit the
schema and requests that violate it; none may answer with a server error.

Schemathesis' lazy pytest loader (``from_fixture``) does not run under pytest 9, so the schema
is loaded inside the test and each operation's strategy is driven by Hypothesis directly.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from starlette.responses import JSONResponse, Response

from auth_refresh import AuthLocalModule, JwtModule, jwks_router
from conftest import InMemoryUsers, User
from forgery import build_app

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
