"""The SQL stores keep a subject's sessions bounded (issue 22): listing a page, the cap at login
and both revocations walk the subject's live families only (the partial index of families not
revoked), never the revoked ones the tables keep until they expire. Shown by the query plans and
by counting what each statement examines with 20,000 revoked families of one subject next to
none; two logins at once never leave more sessions than the cap; an older SQLite file gets the
index. A login purges, by the index of their age, the families past the absolute lifetime."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from auth_refresh import RefreshTokenStore
from auth_refresh.stores import postgres_functions, postgres_schema, sqlite
from auth_refresh.stores.base import SESSION_PAGE_MAX, SessionCursor
from auth_refresh.stores.sqlite_schema import SCHEMA_VERSION
from store_fixtures import LIFETIME, Family, opened

pytestmark = pytest.mark.anyio

SUBJECT = "flooded"
TOMBSTONES = 20_000
LIVE = 5
CAP = 10
# What one statement may examine: a page plus the cap, whatever the subject's tombstones.
BOUND = SESSION_PAGE_MAX + CAP


async def start_live_sessions(url: str, now: float) -> list[Family]:
    """LIVE sessions of SUBJECT, a second apart, through the store (it makes its schema)."""
    families = []
    async with opened(url) as store:
        for offset in range(LIVE):
            family = Family(store, SUBJECT)
            family.now = now + offset
            families.append(await family.start(max_sessions=CAP))
    return families


# -- SQLite ---------------------------------------------------------------------------------------


def sqlite_statements(now: float, cursor: SessionCursor) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """Each statement the store runs over a subject's sessions, with its parameters."""
    yield sqlite.LIST_SESSIONS, (SUBJECT, now, SESSION_PAGE_MAX)
    yield sqlite.LIST_SESSIONS_AFTER, (SUBJECT, now, cursor.created_at, cursor.session_id, 100)
    yield sqlite.PURGE_SUBJECT_EXPIRED, (SUBJECT, now)
    yield sqlite.REVOKE_BEYOND_CAP, (SUBJECT, now, "new-family", 1)
    yield sqlite.REVOKE_OTHERS, (SUBJECT, now, None)
    yield sqlite.REVOKE_SUBJECT, (SUBJECT, now)


def steps_of(connection: sqlite3.Connection, sql: str, parameters: tuple[Any, ...]) -> int:
    """How many virtual machine instructions ``sql`` runs (its writes undone afterwards)."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    connection.execute("BEGIN")
    connection.set_progress_handler(count, 1)
    try:
        connection.execute(sql, parameters).fetchall()
    finally:
        connection.set_progress_handler(None, 1)
        connection.execute("ROLLBACK")
    return steps


def sqlite_row(family_id: str, created_at: float, *, revoked: bool) -> tuple[Any, ...]:
    """A family of SUBJECT's as sqlite.INSERT_FAMILY takes it, live for ten minutes."""
    token, session = "t-" + family_id, "s-" + family_id
    family = (created_at, created_at + 600, token, None, None, None, int(revoked), session)
    return (SUBJECT, *family, None, None, None, family_id)


def add_sqlite_tombstones(path: Path, now: float) -> None:
    rows = [sqlite_row(f"tomb-{i}", now - i, revoked=True) for i in range(TOMBSTONES)]
    with sqlite3.connect(path) as connection:
        connection.executemany(sqlite.INSERT_FAMILY, rows)
    connection.close()


async def test_sqlite_statements_use_the_live_families_index(tmp_path: Path) -> None:
    path, now = tmp_path / "families.db", time.time()
    await start_live_sessions(f"sqlite:///{path}", now)
    cursor = SessionCursor(now + 2, "s")
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        for sql, parameters in sqlite_statements(now, cursor):
            plan = [row[3] for row in connection.execute("EXPLAIN QUERY PLAN " + sql, parameters)]
            assert any("INDEX auth_refresh_families_live" in step for step in plan), (sql, plan)
            assert not any(step.startswith("SCAN") for step in plan), (sql, plan)
    finally:
        connection.close()


async def test_sqlite_statements_examine_no_tombstone(tmp_path: Path) -> None:
    path, now = tmp_path / "families.db", time.time()
    families = await start_live_sessions(f"sqlite:///{path}", now)
    cursor = SessionCursor(families[2].now, families[2].session_id)
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        without = [steps_of(connection, *each) for each in sqlite_statements(now, cursor)]
        add_sqlite_tombstones(path, now)
        flooded = [steps_of(connection, *each) for each in sqlite_statements(now, cursor)]
    finally:
        connection.close()
    # A walk over the tombstones would take at least one instruction for each of them.
    for clean, crowded in zip(without, flooded, strict=True):
        assert crowded <= clean + 50, (without, flooded)
    # And the store still answers as it should over them.
    async with opened(f"sqlite:///{path}") as store:
        page = await store.list_sessions(SUBJECT, now=now + LIVE, limit=2)
        assert [s.session_id for s in page] == [families[4].session_id, families[3].session_id]
        cursor = SessionCursor.of(page[-1])
        rest = await store.list_sessions(SUBJECT, now=now + LIVE, limit=100, after=cursor)
        assert [s.session_id for s in rest] == [f.session_id for f in families[2::-1]]
        kept = families[0].session_id
        assert await store.revoke_other_sessions(SUBJECT, kept, now=now + LIVE) == LIVE - 1
        assert await store.revoke_subject(SUBJECT, now=now + LIVE) == 1


V3_INDEXES = (
    "CREATE INDEX auth_refresh_families_subject ON auth_refresh_families (subject)",
    "CREATE INDEX auth_refresh_families_expires_at ON auth_refresh_families (expires_at)",
    "CREATE UNIQUE INDEX auth_refresh_families_session ON auth_refresh_families (session_id)",
)


async def test_a_sqlite_file_of_the_third_schema_gets_the_live_families_and_age_indexes(
    tmp_path: Path,
) -> None:
    path, now = tmp_path / "families.db", time.time()
    with sqlite3.connect(path) as before:
        before.execute(
            "CREATE TABLE auth_refresh_families (family_id TEXT PRIMARY KEY, subject TEXT "
            "NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL, live_token_id TEXT "
            "NOT NULL, previous_token_id TEXT, consumed_at REAL, successor_pair TEXT, revoked "
            "INTEGER NOT NULL DEFAULT 0, session_id TEXT NOT NULL, refreshed_at REAL, "
            "user_agent TEXT, client_ip TEXT)"
        )
        for statement in V3_INDEXES:
            before.execute(statement)
        for index, revoked in enumerate((False, False, True)):
            before.execute(
                sqlite.INSERT_FAMILY, sqlite_row(f"f{index}", now + index, revoked=revoked)
            )
        before.execute("PRAGMA user_version = 3")
    before.close()
    async with opened(f"sqlite:///{path}") as store:
        sessions = await store.list_sessions(SUBJECT, now=now + 1, limit=10)
        assert [session.session_id for session in sessions] == ["s-f1", "s-f0"]
    with sqlite3.connect(path) as after:
        assert after.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        names = {name for (name,) in after.execute("SELECT name FROM sqlite_master")}
    after.close()
    assert "auth_refresh_families_live" in names
    assert "auth_refresh_families_subject" not in names
    # Schema 6: by age, not by expires_at, which every refresh would move in the index.
    assert "auth_refresh_families_created_at" in names
    assert "auth_refresh_families_expires_at" not in names


async def past_and_idle(store: RefreshTokenStore, now: float) -> tuple[Family, Family]:
    """A family started past the absolute lifetime before ``now``, and one idle past its expiry
    but younger than the lifetime (a purge by age keeps it until then)."""
    past, idle = Family(store, "past"), Family(store, "idle")
    past.now, idle.now = now - LIFETIME - 1, now - LIFETIME + 60
    for family in (past, idle):
        await family.start()
    return past, idle


async def test_a_sqlite_login_purges_families_past_the_absolute_lifetime(tmp_path: Path) -> None:
    path, now = tmp_path / "families.db", time.time()
    async with opened(f"sqlite:///{path}") as store:
        past, idle = await past_and_idle(store, now)
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            explained = "EXPLAIN QUERY PLAN " + sqlite.PURGE_PAST_LIFETIME
            plan = [row[3] for row in connection.execute(explained, (now - LIFETIME, 100))]
            assert any("INDEX auth_refresh_families_created_at" in step for step in plan), plan
            assert not any(step.startswith("SCAN") for step in plan), plan
            await Family(store, "someone").start()
            rows = connection.execute("SELECT family_id FROM auth_refresh_families")
            kept = {family_id for (family_id,) in rows}
        finally:
            connection.close()
    assert past.id not in kept
    assert idle.id in kept


# -- PostgreSQL -----------------------------------------------------------------------------------


def postgres_statements(now: float, cursor: SessionCursor) -> Iterator[tuple[str, tuple[Any, ...]]]:
    yield postgres_schema.LIST_SESSIONS, (SUBJECT, now, SESSION_PAGE_MAX)
    yield (
        postgres_schema.LIST_SESSIONS_AFTER,
        (SUBJECT, now, SESSION_PAGE_MAX, cursor.created_at, cursor.session_id),
    )
    # An absolute lifetime of a day: the tombstones (revoked within it) are not past it.
    start = ("new-family", SUBJECT, now, now + 600, 86400.0, "t", 100, "new-session", None, None)
    yield postgres_functions.START_FAMILY, (*start, 1)
    yield postgres_schema.REVOKE_OTHERS, (SUBJECT, now, None)
    yield postgres_schema.REVOKE_SUBJECT, (SUBJECT, now)


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from plan_nodes(child)


def rows_examined(node: dict[str, Any]) -> int:
    """The rows a plan node read: those it gave and those its filters removed."""
    given = node["Actual Rows"] * node["Actual Loops"]
    removed = node.get("Rows Removed by Filter", 0) + node.get("Rows Removed by Index Recheck", 0)
    return int(given + removed * node["Actual Loops"])


async def test_postgres_statements_examine_no_tombstone(postgres_url: str) -> None:
    now = time.time()
    families = await start_live_sessions(postgres_url, now)
    cursor = SessionCursor(families[2].now, families[2].session_id)
    connection = await asyncpg.connect(postgres_url)
    try:
        await connection.execute(
            "INSERT INTO auth_refresh_families (family_id, subject, created_at, expires_at, "
            "live_token_id, revoked, session_id) SELECT 'tomb-' || i, $1, $2 - i, $2 + 3600, "
            "'t', true, 's-tomb-' || i FROM generate_series(1, $3) AS i",
            SUBJECT,
            now,
            TOMBSTONES,
        )
        await connection.execute("ANALYZE auth_refresh_families")
        for sql, arguments in postgres_statements(now, cursor):
            transaction = connection.transaction()
            await transaction.start()
            try:
                explained = await connection.fetchval(
                    "EXPLAIN (ANALYZE, FORMAT JSON) " + sql, *arguments
                )
            finally:
                await transaction.rollback()
            nodes = list(plan_nodes(json.loads(explained)[0]["Plan"]))
            scans = [node for node in nodes if node.get("Relation Name") == "auth_refresh_families"]
            assert all(node["Node Type"] != "Seq Scan" for node in scans), (sql, nodes)
            assert any(node.get("Index Name") == "auth_refresh_families_live" for node in scans)
            assert max(rows_examined(node) for node in nodes) <= BOUND, (sql, nodes)
    finally:
        await connection.close()
    async with opened(postgres_url) as store:
        page = await store.list_sessions(SUBJECT, now=now + LIVE, limit=2)
        assert [s.session_id for s in page] == [families[4].session_id, families[3].session_id]
        assert await store.revoke_subject(SUBJECT, now=now + LIVE) == LIVE


CROWD = 2_000


async def test_a_postgres_login_purges_families_past_the_absolute_lifetime(
    postgres_url: str,
) -> None:
    now = time.time()
    async with opened(postgres_url) as store:
        past, idle = await past_and_idle(store, now)
        connection = await asyncpg.connect(postgres_url)
        try:
            # Live families of others, so that the plan is the one a populated table gets.
            await connection.execute(
                "INSERT INTO auth_refresh_families (family_id, subject, created_at, expires_at, "
                "live_token_id, session_id) SELECT 'crowd-' || i, 'crowd-' || i, $1 - i, "
                "$1 + 600, 't', 's-crowd-' || i FROM generate_series(1, $2) AS i",
                now,
                CROWD,
            )
            await connection.execute("ANALYZE auth_refresh_families")
            start = ("new", "someone", now, now + 600, LIFETIME, "t", 100, "s-new", None, None, 1)
            transaction = connection.transaction()
            await transaction.start()
            try:
                explained = await connection.fetchval(
                    "EXPLAIN (ANALYZE, FORMAT JSON) " + postgres_functions.START_FAMILY, *start
                )
            finally:
                await transaction.rollback()  # the store's login below is the one that counts
            nodes = list(plan_nodes(json.loads(explained)[0]["Plan"]))
            by_age = [n for n in nodes if n.get("Index Name") == "auth_refresh_families_created_at"]
            # The purge found the one family past the lifetime by age, and read no other row.
            assert [rows_examined(node) for node in by_age] == [1], nodes
            assert all(node["Node Type"] != "Seq Scan" for node in nodes), nodes
            await Family(store, "someone").start()
            rows = await connection.fetch("SELECT family_id FROM auth_refresh_families")
            kept = {row["family_id"] for row in rows}
        finally:
            await connection.close()
    assert past.id not in kept
    assert idle.id in kept
    assert len(kept) == 1 + CROWD + 1  # idle, the crowd, someone's


# -- both -----------------------------------------------------------------------------------------

LOGINS = 12
LOGIN_CAP = 3


@pytest.mark.parametrize("store_url", ["sqlite", "postgres"], indirect=True)
def test_logins_at_once_never_leave_more_sessions_than_the_cap(store_url: str) -> None:
    # One store per thread, each its own event loop and connections, as worker processes have.
    start = threading.Barrier(LOGINS)
    now = time.time()

    def log_in(index: int) -> None:
        async def run() -> None:
            async with opened(store_url) as store:
                await store.session_active("warm-up", now=now)  # connected, schema made
                family = Family(store, SUBJECT)
                family.now = now + index / 1000
                start.wait()
                await family.start(max_sessions=LOGIN_CAP)

        asyncio.run(run())

    async def live() -> int:
        async with opened(store_url) as store:
            return len(await store.list_sessions(SUBJECT, now=now + 1, limit=100))

    for _ in range(3):
        with ThreadPoolExecutor(max_workers=LOGINS) as threads:
            list(threads.map(log_in, range(LOGINS)))
        assert asyncio.run(live()) == LOGIN_CAP
