"""The browser session example in real headless Chromium (Debian's), driven by Playwright.

Screenshots of each step go to ``test-artifacts/browser/`` (git-ignored).
"""

import json
import shutil
import threading
from collections.abc import Iterator
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ACCESS_SECRET, REFRESH_SECRET
from servers import ROOT, free_port, running_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts" / "browser"
# Flags for a closed network: no background connections, no sandbox as root.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.processes,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="Chromium is not installed (apt-get install chromium); .ci/run installs it",
    ),
]


@pytest.fixture
def example(tmp_path: Path) -> Iterator[str]:
    environment = {
        "JWT_MODULE_ACCESS_SECRET": ACCESS_SECRET,
        "JWT_MODULE_REFRESH_SECRET": REFRESH_SECRET,
        # Short-lived access tokens, so the page must refresh silently during the test.
        "JWT_MODULE_ACCESS_EXPIRES_IN": "2",
        "JWT_MODULE_LEEWAY": "0",
        "AUTH_REFRESH_STORE_URL": f"sqlite:///{tmp_path / 'sessions.db'}",
    }
    with running_server(
        ["-m", "examples.browser_session"], workdir=tmp_path, env=environment
    ) as server:
        yield server.base_url


@pytest.fixture
def attackers_token(example: str) -> str:
    """A refresh token of the attacker's own session: anyone can log in and take theirs."""
    credentials = {"username": "user@example.com", "password": "password"}
    response = httpx.post(example + "/auth/login", json=credentials, timeout=10)
    assert response.status_code == 200, response.text
    cookie: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        cookie.load(header)
    return cookie["refresh_token"].value


@pytest.fixture
def attacker_site(example: str, attackers_token: str) -> Iterator[str]:
    """Another site (``localhost`` is not ``127.0.0.1``) whose page posts a form to the refresh
    route with the attacker's own token, to plant the attacker's session (login CSRF)."""
    page = (
        f'<form method="post" action="{example}/auth/refresh">'
        f'<input name="refreshToken" value="{attackers_token}"></form>'
        "<script>document.forms[0].submit()</script>"
    ).encode()

    class AttackPage(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), AttackPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


def test_the_browser_session(example: str, attacker_site: str) -> None:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            page = context.new_page()

            def text(selector: str) -> str:
                return page.text_content(selector) or ""

            def snapshot(name: str) -> None:
                page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)

            page.goto(example + "/")
            snapshot("01-loaded")

            page.click("#login button")
            page.wait_for_function("document.getElementById('status').textContent === 'logged in'")
            snapshot("02-logged-in")

            # The refresh token exists, HttpOnly, but the page's script cannot read it.
            refresh_cookies = [c for c in context.cookies() if c["name"] == "refresh_token"]
            assert refresh_cookies
            assert all(c["httpOnly"] and c["secure"] for c in refresh_cookies)
            assert all(c["sameSite"] == "Strict" for c in refresh_cookies)
            script_sees = page.evaluate("document.cookie")
            assert "refresh_token" not in script_sees
            assert refresh_cookies[0]["value"] not in script_sees
            assert "csrf_token=" in script_sees

            page.click("#me")
            page.wait_for_function(
                "document.getElementById('profile').textContent === 'user@example.com'"
            )
            assert text("#refreshes") == "0"
            snapshot("03-me")

            # Past the access token's two seconds: the page refreshes silently and retries.
            page.wait_for_timeout(3000)
            page.click("#me")
            page.wait_for_function("document.getElementById('refreshes').textContent === '1'")
            assert text("#profile") == "user@example.com"
            rotated = [c for c in context.cookies() if c["name"] == "refresh_token"]
            assert rotated[0]["value"] != refresh_cookies[0]["value"]
            snapshot("04-silent-refresh")

            # No script under the cookie's own path can read it either.
            under_auth = context.new_page()
            under_auth.goto(example + "/auth/refresh")  # a GET: 405, but a page at that path
            assert "refresh_token" not in under_auth.evaluate("document.cookie")
            under_auth.close()

            # A cross-site form post of the attacker's token gets no token and plants nothing.
            before_attack = {c["name"]: c["value"] for c in context.cookies()}
            attack = context.new_page()
            attack.goto(attacker_site)
            attack.wait_for_url(example + "/auth/refresh")
            answer = json.loads(attack.text_content("body") or "{}")
            attack.screenshot(path=ARTIFACTS / "05-cross-site-post.png")
            assert answer["statusCode"] == 403
            assert answer["errorCode"] == "AUTH_REFRESH_CSRF_ERROR"
            assert "accessToken" not in answer
            assert {c["name"]: c["value"] for c in context.cookies()} == before_attack
            attack.close()
            # ...and it did not disturb the session.
            page.wait_for_timeout(2500)
            page.click("#me")
            page.wait_for_function("document.getElementById('refreshes').textContent === '2'")
            assert text("#profile") == "user@example.com"

            page.click("#logout")
            page.wait_for_function("document.getElementById('status').textContent === 'logged out'")
            assert not [c for c in context.cookies() if c["name"] == "refresh_token"]
            page.wait_for_timeout(2500)
            page.click("#me")
            page.wait_for_function("document.getElementById('profile').textContent === 'HTTP 401'")
            assert text("#refreshes") == "2"
            snapshot("06-logged-out")
        finally:
            browser.close()


def test_your_sessions_panel_ends_another_browsers_session(example: str) -> None:
    from playwright.sync_api import Page, sync_playwright

    def logged_in(page: Page) -> Page:
        page.goto(example + "/")
        page.click("#login button")
        page.wait_for_function("document.getElementById('status').textContent === 'logged in'")
        return page

    def sessions(page: Page) -> list[tuple[str, bool]]:
        page.evaluate("document.getElementById('session-list').dataset.loaded = ''")
        page.click("#load-sessions")
        page.wait_for_function("document.getElementById('session-list').dataset.loaded")
        items = page.query_selector_all("#session-list li")
        return [
            (
                (item.text_content() or "").split(",")[0],
                "current" in (item.get_attribute("class") or ""),
            )
            for item in items
        ]

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # Two browsers of one user: separate cookie jars, separate sessions.
            home = logged_in(browser.new_context(user_agent="Home browser").new_page())
            work = logged_in(browser.new_context(user_agent="Work browser").new_page())
            work.click("#me")
            work.wait_for_function(
                "document.getElementById('profile').textContent === 'user@example.com'"
            )
            assert sessions(home) == [("Work browser", False), ("Home browser", True)]
            home.screenshot(path=ARTIFACTS / "07-your-sessions.png", full_page=True)

            # From home, end the work browser's session.
            home.click("#session-list li:not(.current) button.revoke")
            home.wait_for_function("document.querySelectorAll('#session-list li').length === 1")
            assert sessions(home) == [("Home browser", True)]

            # The work browser's access token and refresh cookie are refused: logged out.
            work.click("#me")
            work.wait_for_function("document.getElementById('profile').textContent === 'HTTP 401'")
            assert work.text_content("#status") == "logged out"
            work.screenshot(path=ARTIFACTS / "08-ended-elsewhere.png", full_page=True)

            # "Log out everywhere else": a third browser goes, home stays.
            third = logged_in(browser.new_context(user_agent="Third browser").new_page())
            assert len(sessions(home)) == 2
            home.click("#revoke-others")
            home.wait_for_function("document.querySelectorAll('#session-list li').length === 1")
            third.click("#me")
            third.wait_for_function("document.getElementById('profile').textContent === 'HTTP 401'")
            home.click("#me")
            home.wait_for_function(
                "document.getElementById('profile').textContent === 'user@example.com'"
            )
        finally:
            browser.close()
