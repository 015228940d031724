"""OAuth 2.0 clients the project did not write, against the sync example's ``/auth/token``
(issue 23, item 9): Authlib's httpx ``AsyncOAuth2Client`` (password grant, an expired access
token refreshed on its own, reuse detection) and Swagger UI's password-flow Authorize in
headless Chromium, under uvicorn."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from conftest import ACCESS_SECRET, REFRESH_SECRET
from rotation_app import claims_of
from servers import running_server
from test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.processes, pytest.mark.anyio]

ACCESS_SECONDS = 6
GRACE_SECONDS = 1


def sync_example(tmp_path: Path, *arguments: str, **env: str) -> Any:
    environment = {
        "JWT_MODULE_ACCESS_SECRET": ACCESS_SECRET,
        "JWT_MODULE_REFRESH_SECRET": REFRESH_SECRET,
        "AUTH_REFRESH_STORE_URL": f"sqlite:///{tmp_path / 'sessions.db'}",
        **env,
    }
    command = arguments or ("-m", "examples.sync_registration")
    return running_server(list(command), workdir=tmp_path, env=environment)


@pytest.fixture
def short_lived(tmp_path: Path) -> Iterator[str]:
    """The sync example with access tokens of a few seconds and a one-second grace window."""
    with sync_example(
        tmp_path,
        JWT_MODULE_ACCESS_EXPIRES_IN=str(ACCESS_SECONDS),
        JWT_MODULE_LEEWAY="0",
        AUTH_REFRESH_GRACE_SECONDS=str(GRACE_SECONDS),
    ) as server:
        yield server.base_url


async def test_authlib_logs_in_refreshes_on_its_own_and_a_replay_ends_the_session(
    short_lived: str,
) -> None:
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.httpx_client import AsyncOAuth2Client

    token_url = short_lived + "/auth/token"
    saved: list[dict[str, Any]] = []

    async def update_token(token: dict[str, Any], refresh_token: str | None = None) -> None:
        saved.append({**token, "replaced": refresh_token})

    async with AsyncOAuth2Client(
        token_endpoint=token_url, update_token=update_token, leeway=0, base_url=short_lived
    ) as client:
        first = dict(
            await client.fetch_token(token_url, username="user@example.com", password="password")
        )
        assert first["token_type"] == "Bearer"
        assert first["expires_in"] == ACCESS_SECONDS
        assert (await client.get("/me")).json() == {"id": "user-1", "username": "user@example.com"}
        assert saved == []

        # Past the access token's lifetime: the server refuses it, and Authlib, seeing
        # expires_in run out, refreshes through the token endpoint before asking.
        await anyio.sleep(ACCESS_SECONDS + 0.5)
        stale = {"Authorization": "Bearer " + first["access_token"]}
        async with httpx.AsyncClient(base_url=short_lived) as plain:
            assert (await plain.get("/me", headers=stale)).status_code == 401
        me = await client.get("/me")
        assert me.status_code == 200, me.text
        [rotated] = saved
        assert rotated["replaced"] == first["refresh_token"]
        assert rotated["refresh_token"] != first["refresh_token"]
        assert client.token["access_token"] == rotated["access_token"]

        # Past the grace window, the first refresh token comes back: a reuse.
        await anyio.sleep(GRACE_SECONDS + 0.5)
        with pytest.raises(OAuthError) as replayed:
            await client.refresh_token(token_url, refresh_token=first["refresh_token"])
        assert replayed.value.error == "invalid_grant"

        # The session ended: its newest access token, not expired, is refused...
        assert claims_of(rotated["access_token"])["exp"] > time.time()
        assert (await client.get("/me")).status_code == 401
        # ...and so is its newest refresh token.
        with pytest.raises(OAuthError) as ended:
            await client.refresh_token(token_url, refresh_token=rotated["refresh_token"])
        assert ended.value.error == "invalid_grant"
        assert len(saved) == 1


# -- Swagger UI in headless Chromium -----------------------------------------------------------

SWAGGER_UI = Path(__import__("swagger_ui_bundle").swagger_ui_path)
TESTS = Path(__file__).parent


@pytest.mark.parametrize("root_path", ["", "/api"])
def test_swagger_ui_password_flow_authorize_then_try_it_out_on_me(
    tmp_path: Path, root_path: str
) -> None:
    from playwright.sync_api import Route, sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (apt-get install chromium); .ci/run installs it")

    def swagger_ui_files(route: Route) -> None:
        # /docs loads Swagger UI from a CDN; the test serves the same files from a wheel.
        name = route.request.url.rsplit("/", 1)[-1]
        if (SWAGGER_UI / name).is_file():
            route.fulfill(path=SWAGGER_UI / name)
        else:
            route.abort()

    # Under a prefix: the example mounted in another application (its root_path is /api).
    mounted = ["-m", "uvicorn", "mounted_sync_example:app", "--port", "{port}"]
    serving = (
        sync_example(tmp_path, *mounted, PYTHONPATH=str(TESTS))
        if root_path
        else sync_example(tmp_path)
    )
    with serving as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.route("https://**/*", swagger_ui_files)
            page.goto(server.base_url + root_path + "/docs")
            page.click("button.authorize")
            scheme = page.locator(".modal-ux .auth-container", has_text="OAuth2Password")
            scheme.locator("#oauth_username").fill("user@example.com")
            scheme.locator("#oauth_password").fill("password")
            with page.expect_response(lambda r: r.url.endswith("/auth/token")) as answered:
                scheme.locator("button.modal-btn.auth.authorize").click()
            token_answer = answered.value
            assert token_answer.url == server.base_url + root_path + "/auth/token"
            assert token_answer.status == 200, token_answer.text()
            # Authorized: the dialog offers to log out of the scheme.
            scheme.locator("button.modal-btn.auth", has_text="Logout").wait_for()
            page.click(".modal-ux button.btn-done")

            operation = page.locator("#operations-default-me_me_get")
            operation.locator(".opblock-summary").click()
            operation.locator("button.try-out__btn").click()
            with page.expect_request(lambda r: r.url.endswith("/me")) as sent:
                operation.locator("button.execute").click()
            authorization = sent.value.headers.get("authorization", "")
            assert authorization == "Bearer " + token_answer.json()["access_token"]
            status = operation.locator(".live-responses-table tr.response td.response-col_status")
            status.wait_for()
            page.screenshot(
                path=ARTIFACTS / f"swagger-ui-password-flow{root_path.replace('/', '-')}.png",
                full_page=True,
            )
            assert status.inner_text().strip() == "200"
            assert "user@example.com" in operation.locator(".live-responses-table").inner_text()
        finally:
            browser.close()
