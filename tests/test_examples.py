"""Both examples over real HTTP: uvicorn in a subprocess, the tutorial's flow."""

import subprocess
from pathlib import Path

import httpx
import pytest

from auth_refresh.settings import DEFAULT_STORE_URL
from conftest import ACCESS_SECRET, REFRESH_SECRET
from servers import ROOT, running_server

# Each test starts processes of its own: make quick leaves them out.
pytestmark = pytest.mark.processes

EXAMPLES = ["examples.sync_registration", "examples.async_registration"]
SECRETS = {"JWT_MODULE_ACCESS_SECRET": ACCESS_SECRET, "JWT_MODULE_REFRESH_SECRET": REFRESH_SECRET}


@pytest.mark.parametrize("example", EXAMPLES)
def test_the_tutorial_flow(example: str, tmp_path: Path) -> None:
    with (
        running_server(["-m", example], workdir=tmp_path, env=SECRETS) as server,
        httpx.Client(base_url=server.base_url) as client,
    ):
        login = client.post(
            "/auth/login", json={"username": "user@example.com", "password": "password"}
        )
        assert login.status_code == 200
        refreshed = client.post(
            "/auth/refresh", json={"refreshToken": login.json()["refreshToken"]}
        )
        assert refreshed.status_code == 200
        new_access = refreshed.json()["accessToken"]
        me = client.get("/me", headers={"Authorization": f"Bearer {new_access}"})
        assert me.json() == {"id": "user-1", "username": "user@example.com"}
        # The registered feature: a refresh token as a bearer header on its own route.
        mobile = client.post(
            "/auth/mobile/refresh",
            headers={"Authorization": f"Bearer {refreshed.json()['refreshToken']}"},
        )
        assert mobile.status_code == 200
        assert client.get("/me").status_code == 401
        bad = client.post("/auth/refresh", json={"refreshToken": "forged.token.value"})
        assert bad.status_code == 401


@pytest.mark.parametrize("example", EXAMPLES)
def test_without_secrets_the_examples_warn_loudly(example: str, tmp_path: Path) -> None:
    unset = {"JWT_MODULE_ACCESS_SECRET": "", "JWT_MODULE_REFRESH_SECRET": ""}
    with running_server(["-m", example], workdir=tmp_path, env=unset) as server:
        with httpx.Client(base_url=server.base_url) as client:
            login = client.post(
                "/auth/login", json={"username": "user@example.com", "password": "password"}
            )
            assert login.status_code == 200
        output = server.output()
    assert "WARNING: JWT_MODULE_ACCESS_SECRET is not set" in output
    assert "WARNING: JWT_MODULE_REFRESH_SECRET is not set" in output


def test_the_examples_serve_on_loopback_only(tmp_path: Path) -> None:
    with running_server(["-m", EXAMPLES[0]], workdir=tmp_path, env=SECRETS) as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        assert "Uvicorn running on http://127.0.0.1:" in server.output()


# As `make demo` runs: no secrets, and the default store (the tests' environment says memory://).
UNSET = {
    "JWT_MODULE_ACCESS_SECRET": "",
    "JWT_MODULE_REFRESH_SECRET": "",
    "AUTH_REFRESH_STORE_URL": DEFAULT_STORE_URL,
}
TWO_WORKERS = [
    "-m",
    "uvicorn",
    "examples.sync_registration.app:app",
    "--workers",
    "2",
    "--host",
    "127.0.0.1",
    "--port",
    "{port}",
]


def run_the_tutorial_flow(base_url: str) -> list[int]:
    """Log in, refresh, GET /me, each on a new connection (so on any worker): the statuses."""
    # Connection: close makes every request a new connection, accepted by whichever worker.
    with httpx.Client(base_url=base_url, headers={"Connection": "close"}) as client:
        login = client.post(
            "/auth/login", json={"username": "user@example.com", "password": "password"}
        )
        refreshed = client.post(
            "/auth/refresh", json={"refreshToken": login.json()["refreshToken"]}
        )
        access_token = refreshed.json().get("accessToken", "none")
        me = client.get("/me", headers={"Authorization": f"Bearer {access_token}"})
    return [login.status_code, refreshed.status_code, me.status_code]


def test_two_workers_without_secrets_share_the_development_secrets(tmp_path: Path) -> None:
    with running_server(TWO_WORKERS, workdir=tmp_path, env=UNSET) as server:
        statuses = [run_the_tutorial_flow(server.base_url) for _ in range(20)]
        output = server.output()
    assert statuses == [[200, 200, 200]] * 20, output
    secrets_file = tmp_path / "auth-refresh-dev-secrets.json"
    assert secrets_file.stat().st_mode & 0o777 == 0o600
    assert f"development secret kept in {secrets_file.name}" in output
    assert "shared by every worker and restart" in output


def test_the_development_secrets_survive_a_restart(tmp_path: Path) -> None:
    arguments = ["-m", "examples.sync_registration"]
    with running_server(arguments, workdir=tmp_path, env=UNSET) as server:
        login = httpx.post(
            f"{server.base_url}/auth/login",
            json={"username": "user@example.com", "password": "password"},
        )
    with running_server(arguments, workdir=tmp_path, env=UNSET) as server:
        refreshed = httpx.post(
            f"{server.base_url}/auth/refresh", json={"refreshToken": login.json()["refreshToken"]}
        )
    assert refreshed.status_code == 200


def test_the_development_secrets_sit_beside_the_database(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    env = {**UNSET, "AUTH_REFRESH_STORE_URL": f"sqlite:///{tmp_path / 'data' / 'sessions.db'}"}
    with running_server(["-m", "examples.sync_registration"], workdir=tmp_path, env=env):
        pass
    assert (tmp_path / "data" / "auth-refresh-dev-secrets.json").is_file()
    assert not (tmp_path / "auth-refresh-dev-secrets.json").exists()


def test_make_demo_installs_only_the_library_and_the_server() -> None:
    """`make demo` builds a small environment of its own, not the development one."""
    plan = subprocess.run(
        ["make", "--dry-run", "--always-make", "demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    installs = [line for line in plan.splitlines() if "pip install" in line and "-e " in line]
    assert installs == [".venv-demo/bin/python -m pip install --quiet -e '.[server]'"]
    assert ".venv-demo/bin/python -m examples.sync_registration" in plan


def test_a_development_secrets_file_others_can_read_is_refused(tmp_path: Path) -> None:
    secrets_file = tmp_path / "auth-refresh-dev-secrets.json"
    secrets_file.write_text('{"JWT_MODULE_ACCESS_SECRET": "x", "JWT_MODULE_REFRESH_SECRET": "y"}')
    secrets_file.chmod(0o644)
    with pytest.raises(RuntimeError, match=r"readable by others \(mode 644\)"):  # noqa: SIM117
        with running_server(["-m", "examples.sync_registration"], workdir=tmp_path, env=UNSET):
            pass


def test_a_capped_sync_example_keeps_the_newest_sessions_and_pages_them(tmp_path: Path) -> None:
    """Issue 22's done-when: a cap of five, eight logins; the list comes two at a time."""
    env = {**SECRETS, "AUTH_REFRESH_MAX_SESSIONS_PER_SUBJECT": "5"}
    credentials = {"username": "user@example.com", "password": "password"}
    with (
        running_server(["-m", EXAMPLES[0]], workdir=tmp_path, env=env) as server,
        httpx.Client(base_url=server.base_url) as client,
    ):
        logins = [client.post("/auth/login", json=credentials).json() for _ in range(8)]
        bearer = {"Authorization": "Bearer " + logins[-1]["accessToken"]}
        listed = client.get("/auth/sessions", headers=bearer)
        assert listed.status_code == 200
        assert len(listed.json()) == 5
        assert "Link" not in listed.headers
        # Two at a time, following rel="next" until there is none: each session once.
        pages, url = [], "/auth/sessions?limit=2"
        while url:
            page = client.get(url, headers=bearer)
            assert page.status_code == 200
            assert len(page.json()) <= 2
            pages.append([session["id"] for session in page.json()])
            link = page.headers.get("Link")
            url = link.split(";")[0].strip("<>") if link else ""
            assert not link or link.endswith('; rel="next"')
        assert [len(page) for page in pages] == [2, 2, 1]
        assert [sid for page in pages for sid in page] == [s["id"] for s in listed.json()]
        for number, pair in enumerate(logins):
            refreshed = client.post("/auth/refresh", json={"refreshToken": pair["refreshToken"]})
            if number < 3:  # the three oldest were ended by the later logins
                assert refreshed.status_code == 401
                assert refreshed.json()["errorCode"] == "AUTH_REFRESH_NOT_AUTHORIZED_ERROR"
            else:
                assert refreshed.status_code == 200
