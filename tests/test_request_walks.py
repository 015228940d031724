"""Each request stays in the request layer: a login, a refresh and an access-guarded request,
traced call by call, enter few of the package's files and never the registration's, and read
back no token the library has just signed.

A profiler records every Python frame the request runs in the package (threads included, for
the password hash); the ground (exceptions, _utils, telemetry, types, settings) is not counted.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import pytest

import auth_refresh
from conftest import InMemoryUsers, serve
from rotation_app import rotating_app

pytestmark = pytest.mark.anyio

PACKAGE = str(Path(auth_refresh.__file__).parent) + "/"
GROUND = {"exceptions.py", "_utils.py", "telemetry.py", "types.py", "settings.py"}


READ_BACK = "unverified_claims"


async def files_entered(
    request: Callable[[], Awaitable[httpx.Response]],
) -> tuple[httpx.Response, list[str]]:
    """The package's files (beyond the ground) that ``request`` runs code of, in order; the
    ground's ``unverified_claims`` is named too when it runs."""
    entered: list[str] = []

    def profile(frame: FrameType, event: str, _: Any) -> None:
        name = frame.f_code.co_filename
        if event == "call" and name.startswith(PACKAGE):
            relative = name.removeprefix(PACKAGE)
            if frame.f_code.co_name == READ_BACK:
                entered.append(READ_BACK)
            elif relative not in GROUND and relative not in entered:
                entered.append(relative)

    sys.setprofile(profile)
    threading.setprofile(profile)
    try:
        response = await request()
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    return response, entered


async def test_the_walks_stay_in_the_request_layer(
    users: InMemoryUsers, password_storage: Any
) -> None:
    app, _ = rotating_app(users, password_storage, sessions_path="/auth/sessions")
    credentials = {"username": "user@example.com", "password": "password"}
    async with serve(app) as client:
        await client.post("/auth/login", json=credentials)  # warm: first-use imports
        _, login = await files_entered(lambda: client.post("/auth/login", json=credentials))
        pair = (await client.post("/auth/login", json=credentials)).json()
        _, refresh = await files_entered(
            lambda: client.post("/auth/refresh", json={"refreshToken": pair["refreshToken"]})
        )
        bearer = {"Authorization": "Bearer " + pair["accessToken"]}
        # The first guarded request of a session reads the store; the next one the cache.
        _, guarded = await files_entered(lambda: client.get("/me", headers=bearer))
        _, cached = await files_entered(lambda: client.get("/me", headers=bearer))

    for walk in (login, refresh, guarded, cached):
        assert READ_BACK not in walk
        assert "registration/module.py" not in walk
        assert not any(name.startswith("registration/") for name in walk), walk
    assert "flows/refresh.py" in refresh
    assert len(login) <= 10, login
    assert len(refresh) <= 10, refresh
    assert "stores/memory.py" in guarded  # the session read from the store
    assert len(guarded) <= 7, guarded
    assert len(cached) <= 7, cached


async def test_the_cookie_answers_read_back_no_token(
    users: InMemoryUsers, password_storage: Any
) -> None:
    # The CSRF token and the cookie's Max-Age come from what was signed, not from the token.
    app, _ = rotating_app(users, password_storage, settings={"cookie_transport": True})
    credentials = {"username": "user@example.com", "password": "password"}
    async with serve(app, base_url="https://testserver") as client:
        answer, login = await files_entered(lambda: client.post("/auth/login", json=credentials))
        csrf = {"X-CSRF-Token": answer.json()["csrfToken"]}
        _, refresh = await files_entered(lambda: client.post("/auth/refresh", headers=csrf))
    assert "transport/cookies.py" in login
    assert "transport/cookies.py" in refresh
    assert READ_BACK not in login
    assert READ_BACK not in refresh
