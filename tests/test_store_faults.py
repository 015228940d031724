"""Faults: a Redis that is stopped or paused, a SQLite file another writer holds. Each gives a
503 with Retry-After within 2 s (the bound the issue sets), never a token, and the store works
again once the fault is gone."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

import auth_refresh.stores.session_cache as session_cache_module
from auth_refresh import PasswordStorageService, RotationOutcome, StoreUnavailableError
from auth_refresh.stores.sqlite_worker import SqliteWorker
from conftest import InMemoryUsers, serve
from factories import login
from postgres_server import PostgresServer
from rotation_app import (
    ANSWER_WITHIN_SECONDS,
    StoreServer,
    assert_store_unavailable,
    check_a_stopped_server_then_back,
    refresh,
    rotating_app,
    timed,
)
from store_fixtures import Family, opened, running_redis

# Most tests here start a server of their own: make quick leaves them out.
pytestmark = [pytest.mark.anyio, pytest.mark.servers]


async def test_a_stopped_redis_is_a_503_and_the_store_works_once_it_is_back(
    users: InMemoryUsers, password_storage: PasswordStorageService, tmp_path: Path
) -> None:
    # Append-only persistence, so the restarted server still knows the family.
    with running_redis(tmp_path, appendonly=True) as server:
        app, _ = rotating_app(users, password_storage, settings={"store_url": server.url})
        async with serve(app) as client:
            await check_a_stopped_server_then_back(client, server)


async def test_a_paused_redis_is_a_503_within_2_seconds_and_recovers(
    users: InMemoryUsers, password_storage: PasswordStorageService, tmp_path: Path
) -> None:
    with running_redis(tmp_path) as server:
        app, _ = rotating_app(users, password_storage, settings={"store_url": server.url})
        async with serve(app) as client:
            token = (await login(client))["refreshToken"]
            server.pause()
            try:
                response, elapsed = await timed(refresh(client, token))
                assert_store_unavailable(response)
                assert elapsed < ANSWER_WITHIN_SECONDS
            finally:
                server.resume()
            # Redis may have run the step once it woke up; within the grace window the retry
            # gets that step's pair, otherwise it rotates now: a 200 either way.
            retried = await refresh(client, token)
            assert retried.status_code == 200
            assert (await refresh(client, retried.json()["refreshToken"])).status_code == 200


async def test_a_sqlite_file_locked_by_another_writer_is_a_bounded_wait_then_a_503(
    users: InMemoryUsers, password_storage: PasswordStorageService, tmp_path: Path
) -> None:
    path = tmp_path / "families.db"
    app, _ = rotating_app(users, password_storage, settings={"store_url": f"sqlite:///{path}"})
    async with serve(app) as client:
        token = (await login(client))["refreshToken"]
        other_writer = sqlite3.connect(path, isolation_level=None)
        try:
            other_writer.execute("BEGIN IMMEDIATE")
            # A burst: the requests queued behind the first do not wait a second each.
            waiting = asyncio.gather(*(timed(refresh(client, token)) for _ in range(10)))
            # The wait happens off the event loop: other requests are served meanwhile.
            assert (await client.get("/openapi.json")).status_code == 200
            assert not waiting.done()
            for response, elapsed in await waiting:
                assert_store_unavailable(response)
                assert elapsed < ANSWER_WITHIN_SECONDS
        finally:
            other_writer.execute("ROLLBACK")
            other_writer.close()
        # The refused attempt consumed nothing: the same token rotates now.
        assert (await refresh(client, token)).status_code == 200


async def test_a_corrupt_sqlite_row_is_a_503_not_a_500(tmp_path: Path) -> None:
    path = tmp_path / "families.db"
    async with opened(f"sqlite:///{path}") as store:
        family = await Family(store).start()
        assert (await family.rotate(family.first_token))[0] is RotationOutcome.ROTATED
        with sqlite3.connect(path) as writer:
            writer.execute("UPDATE auth_refresh_families SET successor_pair = '{not json'")
        writer.close()
        # A repeat within the grace window reads the stored pair back.
        with pytest.raises(StoreUnavailableError):
            await family.rotate(family.first_token)


async def test_a_corrupt_sqlite_row_fails_its_step_alone_in_a_batch(tmp_path: Path) -> None:
    """A rotation writes with one statement at most, so it runs without a savepoint: one that
    fails (a corrupt row) in a batch undoes nothing of the others, which commit."""
    path = tmp_path / "families.db"
    async with opened(f"sqlite:///{path}") as store:
        broken, healthy = await Family(store).start(), await Family(store).start()
        assert (await broken.rotate(broken.first_token))[0] is RotationOutcome.ROTATED
        with sqlite3.connect(path) as writer:
            writer.execute(
                "UPDATE auth_refresh_families SET successor_pair = '{not json' WHERE family_id = ?",
                (broken.id,),
            )
        writer.close()
        # Asked for in one pass of the event loop: one batch, one transaction.
        repeat, rotated = await asyncio.gather(
            broken.rotate(broken.first_token),
            healthy.rotate(healthy.first_token),
            return_exceptions=True,
        )
        assert isinstance(repeat, StoreUnavailableError)
        assert not isinstance(rotated, BaseException)
        assert rotated[0] is RotationOutcome.ROTATED
        # Committed: the successor it was offered is the live token now.
        assert (await healthy.rotate(rotated[2].token_id))[0] is RotationOutcome.ROTATED


@pytest.fixture
def stopping_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[StoreServer, str]]:
    """A server of the kind named by the parameter, for a test to stop, and its store's URL."""
    if request.param == "postgres":
        postgres: PostgresServer = request.getfixturevalue("faulty_postgres")
        yield postgres, postgres.fresh_database()
        return
    # Append-only persistence, so the restarted server still knows the sessions.
    with running_redis(tmp_path, appendonly=True) as server:
        yield server, server.url


# The default bound on Redis and PostgreSQL; the other bounds on Redis alone (the cache that
# applies them is the same over every store).
@pytest.mark.parametrize(
    ("stopping_store", "stale"),
    [("redis", None), ("postgres", None), ("redis", 0.0), ("redis", 0.5)],
    indirect=["stopping_store"],
)
async def test_access_tokens_during_a_store_outage_live_as_long_as_the_stale_bound(
    users: InMemoryUsers,
    password_storage: PasswordStorageService,
    stopping_store: tuple[StoreServer, str],
    stale: float | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 21: a session seen live before the store stopped keeps answering 200 for
    ``session_check_stale_seconds`` (default 30), then 503; 0 refuses at once."""
    server, url = stopping_store
    settings: dict[str, object] = {"session_check_interval": 0}
    if stale is not None:
        settings["session_check_stale_seconds"] = stale
    app, _ = rotating_app(users, password_storage, settings={**settings, "store_url": url})
    async with serve(app) as client:
        pair = await login(client)
        # Logged in first: a login's password hash, slow on a loaded machine, would otherwise
        # eat the 0.5 s bound between the last check and the store's outage.
        never_seen = await login(client)
        headers = {"Authorization": "Bearer " + pair["accessToken"]}
        assert (await client.get("/me", headers=headers)).status_code == 200
        server.stop()
        try:
            during = await client.get("/me", headers=headers)
            if stale == 0.0:
                assert_store_unavailable(during)
            else:
                assert during.status_code == 200
            # A session the store never said was live is not trusted.
            unseen = {"Authorization": "Bearer " + never_seen["accessToken"]}
            assert_store_unavailable(await client.get("/me", headers=unseen))
            if stale == 0.5:
                await asyncio.sleep(0.6)
                assert_store_unavailable(await client.get("/me", headers=headers))
            if stale is None:
                # 31 s later, without waiting them: the cache's clock alone moves (its module's
                # ``time``), so the event loop and the store's timeouts keep the real one.
                moved = SimpleNamespace(monotonic=lambda: time.monotonic() + 31)
                monkeypatch.setattr(session_cache_module, "time", moved)
                assert_store_unavailable(await client.get("/me", headers=headers))
        finally:
            server.start()
        assert (await client.get("/me", headers=headers)).status_code == 200


async def test_a_sqlite_batch_that_ran_past_its_deadline_commits_nothing(tmp_path: Path) -> None:
    """Issue 21: a step answered with a 503 never takes effect. Steps that run past the busy
    timeout (a stalled disk, a long lock wait before them) roll back instead of committing."""
    path = tmp_path / "families.db"
    async with opened(f"sqlite:///{path}") as store:
        family = await Family(store).start()
        worker = SqliteWorker(str(path), busy_timeout=0.2)

        def revoke(connection: sqlite3.Connection) -> None:
            connection.execute("UPDATE auth_refresh_families SET revoked = 1")

        def revoke_slowly(connection: sqlite3.Connection) -> None:
            revoke(connection)
            time.sleep(0.4)

        try:
            with pytest.raises(StoreUnavailableError):
                await worker.run(revoke_slowly)
            assert await family.active()
            # In time, the same step commits.
            await worker.run(revoke)
        finally:
            await worker.close()
        assert not await family.active()
