"""50 simultaneous refreshes with one token, on every store: one successor pair. With the grace
window every request gets it; without, exactly one succeeds (and the rest revoke the family)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi import FastAPI

from auth_refresh import (
    AuthRefreshModule,
    RefreshTokenStore,
    Rotation,
    RotationOutcome,
    SessionStart,
    SqliteRefreshTokenStore,
    StoreUnavailableError,
    open_store,
)
from auth_refresh.stores.sealing import session_id_of
from auth_refresh.testing import MAX_SESSIONS
from conftest import InMemoryUsers, serve
from factories import assert_unauthorized
from rotation_app import refresh
from store_fixtures import IDLE, LIFETIME, new_id, successor

BURST = 50
# Long enough for BURST writers queued behind one another on a busy machine.
QUEUE_SECONDS = 30.0


@pytest.mark.anyio
@pytest.mark.parametrize("grace", [5, 0])
async def test_a_burst_of_refreshes_over_http_yields_one_successor_pair(
    users: InMemoryUsers, store_url: str, grace: int
) -> None:
    module = AuthRefreshModule.for_root(
        user_lookup_service=users, settings={"store_url": store_url, "grace_seconds": grace}
    )
    app = FastAPI()
    module.attach(app)
    async with serve(app) as client:
        token = (await module.issue_for_subject("user-1"))["refreshToken"]
        answers = await asyncio.gather(*(refresh(client, token) for _ in range(BURST)))
        succeeded = [answer.json() for answer in answers if answer.status_code == 200]
        pairs = {(pair["accessToken"], pair["refreshToken"]) for pair in succeeded}
        assert len(pairs) == 1
        ((_, live),) = pairs
        if grace:
            assert len(succeeded) == BURST
            assert (await refresh(client, live)).status_code == 200
        else:
            assert len(succeeded) == 1
            for answer in answers:
                if answer.status_code != 200:
                    assert_unauthorized(answer)
            # The replays revoked the family, its one successor with it.
            assert_unauthorized(await refresh(client, live))


@pytest.mark.parametrize("grace", [5.0, 0.0])
def test_a_burst_from_threads_each_with_its_own_event_loop_rotates_once(
    store_url: str, grace: float
) -> None:
    # Memory: one store shared by the threads. SQLite and Redis: one store (one connection) per
    # thread, as separate processes would have.
    shared = open_store(store_url) if store_url == "memory://" else None
    family_id, first_token, now = new_id(), new_id(), time.time()
    start = threading.Barrier(BURST)

    async def start_family() -> None:
        store = shared or open_store(store_url)
        try:
            await store.start_family(
                family_id,
                "user-1",
                first_token,
                token_expires_at=now + IDLE,
                now=now,
                absolute_lifetime=LIFETIME,
                session=SessionStart(session_id_of(family_id)),
                max_sessions=MAX_SESSIONS,
            )
        finally:
            if shared is None:
                await store.close()

    async def rotate(store: RefreshTokenStore) -> Rotation:
        return await store.rotate(
            family_id,
            first_token,
            successor(now),
            now=now,
            grace_seconds=grace,
            absolute_lifetime=LIFETIME,
        )

    async def connected(store: RefreshTokenStore) -> None:
        # 50 cluster clients finding the cluster, or 50 PostgreSQL pools connecting, at once on
        # a 2-CPU machine can take longer than a step's deadline (a 503: fail closed). The
        # burst under test is the rotation, so each thread's store connects first, as a
        # worker's has by its second request.
        for _ in range(10):
            try:
                await store.session_active(new_id(), now=now)
                return
            except StoreUnavailableError:
                await asyncio.sleep(0.2)

    def one_thread() -> Rotation:
        async def run() -> Rotation:
            store = shared or queueing_store(store_url)
            try:
                if store_url.startswith(("redis-cluster://", "postgresql://")):
                    await connected(store)
                start.wait()
                return await rotate(store)
            finally:
                if shared is None:
                    await store.close()

        return asyncio.run(run())

    asyncio.run(start_family())
    try:
        with ThreadPoolExecutor(max_workers=BURST) as threads:
            rotations = list(threads.map(lambda _: one_thread(), range(BURST)))
    finally:
        if shared is not None:
            asyncio.run(shared.close())
    outcomes = [rotation.outcome for rotation in rotations]
    assert outcomes.count(RotationOutcome.ROTATED) == 1
    winner = next(r.pair for r in rotations if r.outcome is RotationOutcome.ROTATED)
    if grace:
        assert outcomes.count(RotationOutcome.GRACE) == BURST - 1
        assert all(rotation.pair == winner for rotation in rotations)
    else:
        # Each replay is reuse; the first revokes, the later ones find the family revoked.
        refused = {RotationOutcome.REUSED, RotationOutcome.REVOKED}
        assert all(
            outcome in refused for outcome in outcomes if outcome is not RotationOutcome.ROTATED
        )
        assert RotationOutcome.REUSED in outcomes


def queueing_store(url: str) -> RefreshTokenStore:
    """A store of ``url``; a SQLite one waits for the write lock as long as BURST writers queue
    on a busy machine (what these tests judge is the outcome, not the default second)."""
    if url.startswith("sqlite:///"):
        return SqliteRefreshTokenStore(url.removeprefix("sqlite:///"), busy_timeout=QUEUE_SECONDS)
    return open_store(url)


def test_processes_starting_together_on_a_new_sqlite_file_all_get_their_families(
    tmp_path: Path,
) -> None:
    # One store per thread: each its own connection, as each worker process has.
    url, now = f"sqlite:///{tmp_path / 'new.db'}", time.time()
    start = threading.Barrier(BURST)

    def first_login(index: int) -> None:
        async def run() -> None:
            store = queueing_store(url)
            try:
                start.wait()
                await store.start_family(
                    f"family-{index}",
                    "user-1",
                    f"token-{index}",
                    token_expires_at=now + IDLE,
                    now=now,
                    absolute_lifetime=LIFETIME,
                    session=SessionStart(f"session-{index}"),
                    max_sessions=BURST,
                )
            finally:
                await store.close()

        asyncio.run(run())

    with ThreadPoolExecutor(max_workers=BURST) as threads:
        list(threads.map(first_login, range(BURST)))
    with sqlite3.connect(tmp_path / "new.db") as database:
        (families,) = database.execute("SELECT count(*) FROM auth_refresh_families").fetchone()
        (mode,) = database.execute("PRAGMA journal_mode").fetchone()
    database.close()
    assert (families, mode) == (BURST, "wal")
