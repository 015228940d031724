"""OpenAPI that Swagger UI can use (issue 10, item 8): security schemes from FastAPI's own
classes, the 401 of guarded routes, where the refresh route's token comes from; a schema asked
for before startup is not kept, the application's routes guarded by ``AuthRefreshGuard``
document the token they read, and the schema says exactly what the routes accept (issue 23)."""

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI

from auth_refresh import (
    AuthJwtGuard,
    AuthRefreshGuard,
    AuthRefreshModule,
    ExtractJwt,
    PasswordStorageService,
)
from conftest import ACCESS_SECRET, REFRESH_SECRET, InMemoryUsers, serve
from rotation_app import rotating_app
from servers import running_server

pytestmark = pytest.mark.anyio


async def openapi_of(app: FastAPI) -> dict[str, Any]:
    async with serve(app) as client:
        schema: dict[str, Any] = (await client.get("/openapi.json")).json()
    return schema


async def test_an_access_guarded_route_shows_the_lock_and_its_401(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = rotating_app(users, password_storage)
    schema = await openapi_of(app)
    assert schema["components"]["securitySchemes"]["AccessToken"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An access token",
    }
    me = schema["paths"]["/me"]["get"]
    assert me["security"] == [{"AccessToken": []}]
    assert "parameters" not in me  # no Authorization parameter, which OpenAPI says to ignore
    unauthorized = me["responses"]["401"]
    assert unauthorized["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    assert "WWW-Authenticate" in unauthorized["headers"]
    assert "ErrorBody" in schema["components"]["schemas"]


async def test_the_body_refresh_route_requires_its_body_and_documents_its_headers(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = rotating_app(users, password_storage)
    operation = (await openapi_of(app))["paths"]["/auth/refresh"]["post"]
    assert operation["requestBody"]["required"] is True
    assert "security" not in operation
    assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
    assert operation["responses"]["503"]["headers"]["Retry-After"]["schema"] == {"type": "integer"}


async def test_a_bearer_refresh_route_names_a_bearer_scheme_not_a_header_parameter(
    users: InMemoryUsers,
) -> None:
    app = FastAPI()
    AuthRefreshModule.for_root(user_lookup_service=users).attach(app)
    AuthRefreshModule.register(
        settings={"jwt_from_request": ExtractJwt.from_auth_header_as_bearer_token()},
        path="/mobile/refresh",
    ).attach(app)
    schema = await openapi_of(app)
    mobile = schema["paths"]["/mobile/refresh"]["post"]
    assert mobile["security"] == [{"RefreshToken": []}]
    assert "parameters" not in mobile
    assert "requestBody" not in mobile
    assert schema["components"]["securitySchemes"]["RefreshToken"]["scheme"] == "bearer"
    # The global route keeps its body, required.
    assert schema["paths"]["/auth/refresh"]["post"]["requestBody"]["required"] is True


@pytest.mark.parametrize("joins", ["attach", "include_router"])
async def test_openapi_asked_for_before_startup_is_made_again_once_started(
    joins: str, users: InMemoryUsers
) -> None:
    app = FastAPI()
    module = AuthRefreshModule.for_root(
        user_lookup_service=users, settings={"cookie_transport": True}
    )
    if joins == "attach":
        module.attach(app)
    else:
        app.include_router(module.router)
    # Before startup the cookie transport is not known yet (settings may come from a factory).
    early = app.openapi()
    assert "RefreshTokenCookie" not in early.get("components", {}).get("securitySchemes", {})
    async with serve(app) as client:
        schema = (await client.get("/openapi.json")).json()
        assert app.openapi() is app.openapi()  # complete: made once, then kept
    assert schema["components"]["securitySchemes"]["RefreshTokenCookie"]["in"] == "cookie"
    refresh = schema["paths"]["/auth/refresh"]["post"]
    assert {"RefreshTokenCookie": []} in refresh["security"]
    assert "X-CSRF-Token" in {parameter["name"] for parameter in refresh["parameters"]}


async def test_routes_guarded_by_the_refresh_guard_document_the_token_they_read(
    users: InMemoryUsers,
) -> None:
    app = FastAPI()
    root = AuthRefreshModule.for_root(user_lookup_service=users)
    root.attach(app)
    mobile = AuthRefreshModule.register(
        settings={"jwt_from_request": ExtractJwt.from_auth_header_as_bearer_token()},
        controllers=False,
    )
    mobile.attach(app)

    @app.post("/reauthenticate")
    async def reauthenticate(user: Annotated[Any, Depends(AuthRefreshGuard())]) -> Any:
        return root.token_response(await root.issue(user))

    @app.post("/mobile/reauthenticate")
    async def mobile_reauthenticate(user: Annotated[Any, Depends(AuthRefreshGuard(mobile))]) -> Any:
        return mobile.token_response(await mobile.issue(user))

    # Both tokens: the guards' requirements together (AND), not alternatives.
    @app.post("/mobile/link", dependencies=[Depends(AuthJwtGuard())])
    async def link(user: Annotated[Any, Depends(AuthRefreshGuard(mobile))]) -> None:
        return None

    # A router's dependency guards every route of it.
    guarded = APIRouter(dependencies=[Depends(AuthRefreshGuard())])

    @guarded.get("/step-up")
    async def step_up() -> None:
        return None

    app.include_router(guarded)
    async with serve(app) as client:
        schema = (await client.get("/openapi.json")).json()
        body = schema["paths"]["/auth/refresh"]["post"]["requestBody"]
        operation = schema["paths"]["/reauthenticate"]["post"]
        assert operation["requestBody"] == body
        assert body["required"] is True
        assert "security" not in operation
        assert {"400", "401", "413", "503"} <= set(operation["responses"])
        assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
        assert schema["paths"]["/step-up"]["get"]["requestBody"] == body
        bearer = schema["paths"]["/mobile/reauthenticate"]["post"]
        assert bearer["security"] == [{"RefreshToken": []}]
        assert "requestBody" not in bearer
        assert schema["paths"]["/mobile/link"]["post"]["security"] == [
            {"AccessToken": [], "RefreshToken": []}
        ]
        # What the schema says is what the route takes: the token in the documented body.
        pair = await root.issue_for_subject("user-1")
        answer = await client.post("/reauthenticate", json={"refreshToken": pair["refreshToken"]})
        assert answer.status_code == 200, answer.text
        pair = await mobile.issue_for_subject("user-1")
        answer = await client.post(
            "/mobile/reauthenticate", headers={"Authorization": f"Bearer {pair['refreshToken']}"}
        )
        assert answer.status_code == 200, answer.text


async def test_the_login_schema_bounds_are_the_login_s_own(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = rotating_app(users, password_storage)
    async with serve(app) as client:
        schema = (await client.get("/openapi.json")).json()
        body = schema["paths"]["/auth/login"]["post"]["requestBody"]["content"]
        fields = body["application/json"]["schema"]["properties"]
        assert body["application/x-www-form-urlencoded"]["schema"]["properties"] == fields

        async def login(username: str, password: str) -> int:
            answer = await client.post(
                "/auth/login", json={"username": username, "password": password}
            )
            return answer.status_code

        for name, other in (("username", "password"), ("password", "username")):
            low, high = fields[name]["minLength"], fields[name]["maxLength"]
            assert low == 1
            # Within the bounds, in characters (two bytes each here): a login that may fail.
            for size in (low, high):
                values = {name: "é" * size, other: "x"}
                assert await login(**values) == 401
            for size in (low - 1, high + 1):
                values = {name: "é" * size, other: "x"}
                assert await login(**values) == 400


async def test_each_session_path_allows_the_methods_the_schema_lists(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    sessions = "/auth/sessions"
    app, _ = rotating_app(users, password_storage, sessions_path=sessions)
    async with serve(app) as client:
        schema = (await client.get("/openapi.json")).json()
        pattern = schema["paths"][sessions + "/{session_id}"]["delete"]["parameters"][0]
        assert pattern["schema"]["pattern"] == "^[A-Za-z0-9_-]{43}$"
        # The literal path is not a session id: its other methods are 405s naming POST.
        for method in ("OPTIONS", "DELETE", "GET"):
            answer = await client.request(method, sessions + "/revoke-others")
            assert answer.status_code == 405
            assert answer.headers["Allow"] == "POST"
        answer = await client.request("OPTIONS", sessions + "/" + "A" * 43)
        assert (answer.status_code, answer.headers["Allow"]) == (405, "DELETE")
        # The session id's route still answers for any other id: not found, once authenticated.
        assert (await client.delete(sessions + "/" + "A" * 43)).status_code == 401


# -- Swagger UI in headless Chromium -----------------------------------------------------------

SWAGGER_UI = Path(__import__("swagger_ui_bundle").swagger_ui_path)


@pytest.fixture
def sync_example(tmp_path: Path) -> Iterator[str]:
    environment = {
        "JWT_MODULE_ACCESS_SECRET": ACCESS_SECRET,
        "JWT_MODULE_REFRESH_SECRET": REFRESH_SECRET,
        "AUTH_REFRESH_STORE_URL": f"sqlite:///{tmp_path / 'sessions.db'}",
    }
    with running_server(
        ["-m", "examples.sync_registration"], workdir=tmp_path, env=environment
    ) as server:
        yield server.base_url


@pytest.mark.processes  # the example under uvicorn, and Chromium
def test_swagger_ui_authorize_then_try_it_out_on_me_answers_200(sync_example: str) -> None:
    from playwright.sync_api import Route, sync_playwright

    from test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (apt-get install chromium); .ci/run installs it")
    credentials = {"username": "user@example.com", "password": "password"}
    login = httpx.post(sync_example + "/auth/login", json=credentials, timeout=10)
    assert login.status_code == 200, login.text
    access_token = login.json()["accessToken"]

    def swagger_ui_files(route: Route) -> None:
        # /docs loads Swagger UI from a CDN; the test serves the same files from a wheel.
        name = route.request.url.rsplit("/", 1)[-1]
        if (SWAGGER_UI / name).is_file():
            route.fulfill(path=SWAGGER_UI / name)
        else:
            route.abort()

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.route("https://**/*", swagger_ui_files)
            page.goto(sync_example + "/docs")
            page.click("button.authorize")
            # The dialog lists every scheme (the example's bearer refresh route has one too).
            scheme = page.locator(".modal-ux .auth-container", has_text="AccessToken")
            scheme.locator("input[aria-label='auth-bearer-value']").fill(access_token)
            scheme.locator("button.modal-btn.auth.authorize").click()
            page.click(".modal-ux button.btn-done")
            operation = page.locator("#operations-default-me_me_get")
            operation.locator(".opblock-summary").click()
            operation.locator("button.try-out__btn").click()
            operation.locator("button.execute").click()
            status = operation.locator(".live-responses-table tr.response td.response-col_status")
            status.wait_for()
            page.screenshot(path=ARTIFACTS / "swagger-ui-me.png", full_page=True)
            assert status.inner_text().strip() == "200"
            assert "user@example.com" in operation.locator(".live-responses-table").inner_text()
        finally:
            browser.close()
