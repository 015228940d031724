"""Across processes: two uvicorn processes of the tutorial's example share one store, a SQLite
file, a Redis server, a PostgreSQL database or a Redis Cluster. A token rotated on one and
replayed on the other is detected, and a burst split over both still yields one successor
pair."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import ACCESS_SECRET, REFRESH_SECRET
from servers import Server, running_server

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
    answer = httpx.post(server.base_url + "/auth/login", json=CREDENTIALS)
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["refreshToken"]
    return token


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
    # The original again, two generations late: reuse, whichever process sees it.
    assert refresh(first, original).status_code == 401
    assert refresh(second, newest.json()["refreshToken"]).status_code == 401
    access = newest.json()["accessToken"]
    me = httpx.get(first.base_url + "/me", headers={"Authorization": f"Bearer {access}"})
    assert me.json() == {"id": "user-1", "username": "user@example.com"}


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
