"""Issue 21: a refresh answered with an error never takes effect later. Redis (and every node of
a Redis Cluster) frozen with SIGSTOP for longer than the grace window, while clients refresh
their sessions in loops that retry the same token on 503: the steps that gave up reach the
server when it wakes, after their deadline, and are refused there; no session is lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from auth_refresh import PasswordStorageService
from conftest import InMemoryUsers, serve
from factories import login
from redis_cluster import ClusterNodeServer, cluster_url, running_cluster, wait_until_serving
from rotation_app import refresh, rotating_app
from store_fixtures import RedisServer, running_redis

pytestmark = [pytest.mark.anyio, pytest.mark.servers]

GRACE_SECONDS = 5
FREEZE_SECONDS = 7.0
SESSIONS = 6
# Generous: after a freeze, a cluster may answer CLUSTERDOWN for a few seconds.
RECOVERY_SECONDS = 60.0


@dataclass
class RefreshLoop:
    """One client refreshing its session over and over; a 503 is retried with the same token
    after Retry-After."""

    token: str
    refreshed: int = 0
    unavailable: int = 0
    refused: list[str] = field(default_factory=list)

    async def run(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set():
            response = await refresh(client, self.token)
            if response.status_code == 200:
                self.token = response.json()["refreshToken"]
                self.refreshed += 1
                await asyncio.sleep(0.1)
            elif response.status_code == 503:
                self.unavailable += 1
                await asyncio.sleep(float(response.headers["retry-after"]))
            else:
                self.refused.append(f"{response.status_code} {response.text}")
                return


async def wait_for(condition: Callable[[], bool]) -> None:
    """Until ``condition()``, for at most ``RECOVERY_SECONDS``."""
    async with asyncio.timeout(RECOVERY_SECONDS):
        while True:
            if condition():
                return
            await asyncio.sleep(0.1)


async def check_no_session_lost_across_a_freeze(
    client: httpx.AsyncClient,
    servers: Sequence[RedisServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    loops = [RefreshLoop((await login(client))["refreshToken"]) for _ in range(SESSIONS)]
    stop = asyncio.Event()
    running = [asyncio.create_task(loop.run(client, stop)) for loop in loops]
    try:
        await wait_for(lambda: all(loop.refreshed >= 2 for loop in loops))
        for server in servers:
            server.pause()
        try:
            await asyncio.sleep(FREEZE_SECONDS)
        finally:
            for server in servers:
                server.resume()
        before = [loop.refreshed for loop in loops]
        await wait_for(
            lambda: all(
                loop.refused or loop.refreshed >= done + 3
                for loop, done in zip(loops, before, strict=True)
            )
        )
    finally:
        stop.set()
        await asyncio.gather(*running)
    assert [loop.refused for loop in loops] == [[]] * SESSIONS
    # The freeze reached every client: each was told 503 (and retried) at least once.
    assert all(loop.unavailable >= 1 for loop in loops)
    assert not [r for r in caplog.records if "reused" in r.getMessage()]
    for loop in loops:
        assert (await refresh(client, loop.token)).status_code == 200


async def test_a_redis_frozen_longer_than_the_grace_window_loses_no_session(
    users: InMemoryUsers,
    password_storage: PasswordStorageService,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="auth_refresh.security")
    with running_redis(tmp_path) as server:
        settings = {"store_url": server.url, "grace_seconds": GRACE_SECONDS}
        app, _ = rotating_app(users, password_storage, settings=settings)
        async with serve(app) as client:
            await check_no_session_lost_across_a_freeze(client, [server], caplog)


@pytest.fixture(scope="module")
def frozen_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ClusterNodeServer]]:
    """A cluster of this module's own: the test freezes every node."""
    with running_cluster(tmp_path_factory.mktemp("frozen-cluster")) as nodes:
        yield nodes


async def test_a_redis_cluster_frozen_longer_than_the_grace_window_loses_no_session(
    users: InMemoryUsers,
    password_storage: PasswordStorageService,
    frozen_cluster: list[ClusterNodeServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="auth_refresh.security")
    settings = {"store_url": cluster_url(frozen_cluster), "grace_seconds": GRACE_SECONDS}
    app, _ = rotating_app(users, password_storage, settings=settings)
    try:
        async with serve(app) as client:
            await check_no_session_lost_across_a_freeze(client, frozen_cluster, caplog)
    finally:
        for node in frozen_cluster:
            wait_until_serving(node)
