"""Both examples over real HTTP: uvicorn in a subprocess, the tutorial's flow."""

from pathlib import Path

import httpx
import pytest

from conftest import ACCESS_SECRET, REFRESH_SECRET
from servers import running_server

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
