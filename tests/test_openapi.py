"""OpenAPI that Swagger UI can use (issue 10, item 8): security schemes from FastAPI's own
classes, the 401 of guarded routes, where the refresh route's token comes from."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from auth_refresh import AuthRefreshModule, ExtractJwt, PasswordStorageService
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
