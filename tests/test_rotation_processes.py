"""Across processes: two uvicorn processes of the tutorial's example share one store, a SQLite
file, a Redis server, a PostgreSQL database or a Redis Cluster. A token rotated on one and
replayed on the other is detected, and a burst split over both still yields one successor
pair."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import ACCESS_SECRET, REFRESH_SECRET
from rotation_app import claims_of
from servers import Server, running_server

# Each test starts processes of its own: make quick leaves them out.
pytestmark = pytest.mark.processes

BURST = 50
CREDENTIALS = {"username": "user@example.com", "password": "password"}


@pytest.fixture(scope="module", params=["sqlite", "redis", "postgres", "redis-cluster"])
def two_processes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Server]]:
    workdir = tmp_path_factory.mktemp(f"two-processes-{request.param}")
    if request.param == "sqlite":
        store_url = f"sqlite:///{workdir / 'families.db'}"
    elif request.param == "postgres":
        store_url = request.getfixturevalue("postgres_server").url
    else:
        store_url = request.getfixturevalue(request.param.replace("-", "_") + "_url")
    env = {
        "JWT_MODULE_ACCESS_SECRET": ACCESS_SECRET,
        "JWT_MODULE_REFRESH_SECRET": REFRESH_SECRET,
        "AUTH_REFRESH_STORE_URL": store_url,
        "AUTH_REFRESH_ROTATION": "true",
        "AUTH_REFRESH_GRACE_SECONDS": "5",
    }
    command = ["-m", "examples.sync_registration"]
    with (
        running_server(command, workdir=workdir, env=env) as first,
        running_server(command, workdir=workdir, env=env) as second,
    ):
        yield first, second


def login(server: Server) -> str:
    return login_pair(server)["refreshToken"]


def login_pair(server: Server) -> dict[str, str]:
    answer = httpx.post(server.base_url + "/auth/login", json=CREDENTIALS)
    assert answer.status_code == 200, answer.text
    pair: dict[str, str] = answer.json()
    return pair


def me(server: Server, access_token: str) -> int:
    answer = httpx.get(server.base_url + "/me", headers={"Authorization": f"Bearer {access_token}"})
    return answer.status_code


def assert_refused_within_a_second(server: Server, access_token: str) -> None:
    """Every /me sent a second or more after the revocation returned is a 401."""
    revoked_at = time.monotonic()
    while True:
        sent_at = time.monotonic()
        status = me(server, access_token)
        if status == 401:
            return
        assert status == 200
        assert sent_at - revoked_at < 1.0, "the other process still accepts the access token"
        time.sleep(0.05)


def refresh(server: Server, token: str) -> httpx.Response:
    return httpx.post(server.base_url + "/auth/refresh", json={"refreshToken": token})


def test_a_token_rotated_on_one_process_and_replayed_on_the_other_is_detected(
    two_processes: tuple[Server, Server],
) -> None:
    first, second = two_processes
    original = login(first)
    rotated = refresh(first, original)
    assert rotated.status_code == 200
    # The other tab, on the other process, within the grace window: the same pair.
    repeated = refresh(second, original)
    assert repeated.status_code == 200
    assert repeated.json() == rotated.json()
    newest = refresh(second, rotated.json()["refreshToken"])
    assert newest.status_code == 200
    access = newest.json()["accessToken"]
    answer = httpx.get(first.base_url + "/me", headers={"Authorization": f"Bearer {access}"})
    assert answer.json() == {"id": "user-1", "username": "user@example.com"}
    # The original again, two generations late: reuse, whichever process sees it; the
    # session's access token goes with it.
    assert refresh(first, original).status_code == 401
    assert refresh(second, newest.json()["refreshToken"]).status_code == 401
    assert me(first, access) == 401


def test_a_burst_split_over_both_processes_yields_one_successor_pair(
    two_processes: tuple[Server, Server],
) -> None:
    first, second = two_processes
    token = login(first)
    start = threading.Barrier(BURST)

    def one_request(index: int) -> httpx.Response:
        server = (first, second)[index % 2]
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            start.wait()
            return client.post("/auth/refresh", json={"refreshToken": token})

    with ThreadPoolExecutor(max_workers=BURST) as threads:
        answers = list(threads.map(one_request, range(BURST)))
    assert [answer.status_code for answer in answers] == [200] * BURST
    pairs = {(answer.json()["accessToken"], answer.json()["refreshToken"]) for answer in answers}
    assert len(pairs) == 1
    ((_, live),) = pairs
    assert refresh(second, live).status_code == 200


def test_logout_on_one_process_ends_the_session_on_the_other(
    two_processes: tuple[Server, Server],
) -> None:
    first, second = two_processes
    token = login(first)
    live = refresh(first, token).json()["refreshToken"]
    logout = httpx.post(second.base_url + "/auth/logout", json={"refreshToken": live})
    assert logout.status_code == 204
    assert refresh(first, live).status_code == 401


def revoked_by_logout(second: Server, pair: dict[str, str]) -> None:
    answer = httpx.post(
        second.base_url + "/auth/logout", json={"refreshToken": pair["refreshToken"]}
    )
    assert answer.status_code == 204


def revoked_by_reuse(second: Server, pair: dict[str, str]) -> None:
    # Two generations late: reuse, whatever the grace window.
    assert refresh(second, pair["consumedToken"]).status_code == 401


def revoked_by_delete(second: Server, pair: dict[str, str]) -> None:
    headers = {"Authorization": "Bearer " + pair["otherAccessToken"]}
    sessions = httpx.get(second.base_url + "/auth/sessions", headers=headers).json()
    (target,) = [s["id"] for s in sessions if not s["current"] and s["id"] == pair["sid"]]
    answer = httpx.delete(f"{second.base_url}/auth/sessions/{target}", headers=headers)
    assert answer.status_code == 204


@pytest.mark.parametrize(
    "revoke",
    [revoked_by_logout, revoked_by_reuse, revoked_by_delete],
    ids=["logout", "reuse", "delete"],
)
def test_the_sessions_access_token_is_refused_on_the_other_process_within_a_second(
    two_processes: tuple[Server, Server], revoke: Callable[[Server, dict[str, str]], None]
) -> None:
    first, second = two_processes
    original = login_pair(first)
    middle = refresh(first, original["refreshToken"]).json()
    pair = refresh(first, middle["refreshToken"]).json()
    pair["consumedToken"] = original["refreshToken"]
    pair["otherAccessToken"] = login_pair(second)["accessToken"]
    pair["sid"] = claims_of(pair["accessToken"])["sid"]
    # The first process has the session cached as live.
    assert me(first, pair["accessToken"]) == 200
    revoke(second, pair)
    assert_refused_within_a_second(first, pair["accessToken"])
    assert me(second, pair["accessToken"]) == 401
