"""Readiness that tells the truth (issue 21): 200 only while the store answers and holds this
release's schema, 503 with a reason otherwise, within 2 s even while the store hangs; a newer
schema stops the application at startup, an unreachable store does not."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import asyncpg
import pytest
import redis
from fastapi import FastAPI
from redis.cluster import RedisCluster

from auth_refresh import AuthRefreshModule, ConfigurationError, PasswordStorageService
from auth_refresh.flows.readiness import READINESS_TIMEOUT
from auth_refresh.stores.sqlite_schema import SCHEMA_VERSION
from conftest import InMemoryUsers, serve
from store_fixtures import Family, opened, running_redis

pytestmark = pytest.mark.anyio

READY = "/health/ready"


def ready_app(users: InMemoryUsers, store_url: str, **settings: object) -> FastAPI:
    app = FastAPI()
    AuthRefreshModule.for_root(
        user_lookup_service=users,
        settings={"store_url": store_url, **settings},
        readiness_path=READY,
    ).attach(app)
    return app


async def test_a_store_that_answers_is_ready(users: InMemoryUsers, tmp_path: Path) -> None:
    async with serve(ready_app(users, f"sqlite:///{tmp_path / 'ready.db'}")) as client:
        answer = await client.get(READY)
    assert answer.status_code == 200
    assert answer.json() == {"status": "ready"}
    assert answer.headers["Cache-Control"] == "no-store"


async def test_without_rotation_there_is_no_store_to_wait_for(users: InMemoryUsers) -> None:
    app = ready_app(users, "sqlite:////nonexistent/dir/x.db", rotation=False)
    async with serve(app) as client:
        assert (await client.get(READY)).status_code == 200


async def test_a_newer_schema_stops_the_application_at_startup(
    users: InMemoryUsers, tmp_path: Path
) -> None:
    path = tmp_path / "newer.db"
    with sqlite3.connect(path) as newer:
        newer.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    module = AuthRefreshModule.for_root(
        user_lookup_service=users, settings={"store_url": f"sqlite:///{path}"}
    )
    with pytest.raises(ConfigurationError, match="newer than this release"):
        await module.startup(None)
    assert not (await module.readiness()).ready


async def bump_schema_version(kind: str, url: str, by: int) -> None:
    """Change the schema (layout) version a store of ``kind`` keeps at ``url``, as another
    release of auth-refresh would."""
    if kind == "postgres":
        connection = await asyncpg.connect(url)
        try:
            await connection.execute("UPDATE auth_refresh_schema SET version = version + $1", by)
        finally:
            await connection.close()
    elif kind == "redis":
        with redis.Redis.from_url(url) as client:
            client.incrby("auth-refresh:schema", by)
    else:
        host, port = url.removeprefix("redis-cluster://").split(",")[0].split(":")
        with RedisCluster(host=host, port=int(port)) as cluster:
            cluster.incrby("auth-refresh:schema", by)


@pytest.mark.parametrize("store_url", ["postgres", "redis", "redis-cluster"], indirect=True)
async def test_a_newer_schema_on_a_server_stops_the_application_at_startup(
    users: InMemoryUsers, store_url: str, request: pytest.FixtureRequest
) -> None:
    """Through the lifespan, as a server runs the application: its start fails, not a
    request later (the stores' own refusal is tested in their modules)."""
    kind = request.node.callspec.params["store_url"]
    async with opened(store_url) as store:
        await Family(store).start()  # this release's schema, as a deployment made it
    await bump_schema_version(kind, store_url, 1)
    try:
        # A PostgreSQL store checks a database once per process and URL: a URL of its own, as
        # a new process would.
        url = store_url + "?application_name=restarted" if kind == "postgres" else store_url
        with pytest.raises(ConfigurationError, match="newer than this release"):
            async with serve(ready_app(users, url)):
                pytest.fail("the application started on a newer schema")
    finally:
        # The Redis servers are the session's (the next store_url empties them; other tests
        # use them as they are); the PostgreSQL database is this test's alone.
        if kind != "postgres":
            await bump_schema_version(kind, store_url, -1)


@pytest.mark.servers
async def test_an_unreachable_store_starts_not_ready_then_ready_once_it_is_up(
    users: InMemoryUsers, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with running_redis(tmp_path) as server:
        server.stop()
        async with serve(ready_app(users, server.url)) as client:
            assert "the store is not ready" in caplog.text
            answer = await client.get(READY)
            assert answer.status_code == 503
            assert answer.headers["Retry-After"] == "1"
            assert answer.json()["status"] == "unavailable"
            assert answer.json()["reason"]
            server.start()
            assert (await client.get(READY)).status_code == 200


@pytest.mark.servers
async def test_a_hanging_store_is_not_ready_within_the_bound(
    users: InMemoryUsers, password_storage: PasswordStorageService, tmp_path: Path
) -> None:
    with running_redis(tmp_path) as server:
        # A patient store: its own deadline longer than readiness's.
        app = ready_app(users, server.url + "?socket_timeout=30")
        async with serve(app) as client:
            assert (await client.get(READY)).status_code == 200
            server.pause()
            try:
                started = time.monotonic()
                answer = await client.get(READY)
                waited = time.monotonic() - started
            finally:
                server.resume()
            assert answer.status_code == 503
            assert (
                "did not answer" in answer.json()["reason"]
                or "cannot answer" in answer.json()["reason"]
            )
            assert waited < READINESS_TIMEOUT + 1
