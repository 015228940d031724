"""The SQLite store when another connection holds a lock on its file: it waits for the lock
itself, in short random steps until its busy timeout, not with SQLite's busy handler (whose waits
grow to 100 ms while another worker takes the lock again and again: docs/scaling.md). What it
does, not how fast: the speed is the saturation benchmark's (bench/saturation.py)."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from auth_refresh import RotationOutcome, SqliteRefreshTokenStore, StoreUnavailableError
from auth_refresh.stores import sqlite_connection
from auth_refresh.testing import Family

pytestmark = pytest.mark.anyio


class Waits:
    """The store's waits between two tries for its locked file, each waited for real; ``at``
    runs something on the store's thread at the n-th wait (1-based), before it."""

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, at: dict[int, Callable[[], object]] | None = None
    ) -> None:
        self.seconds: list[float] = []
        self.at = at or {}
        monkeypatch.setattr(sqlite_connection, "sleep", self)

    def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)
        action = self.at.get(len(self.seconds))
        if action is not None:
            action()
        time.sleep(seconds)


def connect(path: Path) -> sqlite3.Connection:
    # The store's thread lets it go (Waits.at): any thread may use it.
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


async def test_a_step_takes_the_lock_at_its_first_try_after_the_other_writer_lets_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "families.db"
    store = SqliteRefreshTokenStore(str(path))
    other_writer = connect(path)
    try:
        family = await Family(store).start()
        other_writer.execute("BEGIN IMMEDIATE")
        waits = Waits(monkeypatch, at={3: lambda: other_writer.execute("ROLLBACK")})
        assert (await family.rotate(family.first_token))[0] is RotationOutcome.ROTATED
        # Three tries found the file locked; the one after the writer let go took the lock,
        # and no wait was longer than the longest: none of SQLite's 100 ms sleeps.
        assert len(waits.seconds) == 3
        assert all(0 < wait <= sqlite_connection.LONGEST_WAIT for wait in waits.seconds)
    finally:
        other_writer.close()
        await store.close()


async def test_a_lock_held_throughout_fails_closed_at_the_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "families.db"
    store = SqliteRefreshTokenStore(str(path), busy_timeout=0.2)
    other_writer = connect(path)
    try:
        family = await Family(store).start()
        other_writer.execute("BEGIN IMMEDIATE")
        waits = Waits(monkeypatch)
        with (
            caplog.at_level(logging.WARNING, logger="auth_refresh.store"),
            pytest.raises(StoreUnavailableError),
        ):
            await family.rotate(family.first_token)
        # SQLite's own error, as its busy handler gave; the waits, short, fit in the timeout.
        assert "database is locked" in caplog.text
        assert waits.seconds
        assert max(waits.seconds) <= sqlite_connection.LONGEST_WAIT
        assert sum(waits.seconds) <= store.busy_timeout
        other_writer.execute("ROLLBACK")
        # The refused attempt consumed nothing: the same token rotates now.
        assert (await family.rotate(family.first_token))[0] is RotationOutcome.ROTATED
    finally:
        other_writer.close()
        await store.close()


async def test_a_commit_waiting_for_a_reader_of_a_file_not_in_wal_mode_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # WAL is how the store leaves its file; another program may switch it back, and a store
    # opened while a reader is in the file cannot switch it again. Then each COMMIT waits for
    # the readers to finish: found busy, it is tried again, as SQLite's busy handler would.
    path = tmp_path / "families.db"
    first = SqliteRefreshTokenStore(str(path))
    await first.migrate()
    await first.close()
    with closing(sqlite3.connect(path)) as switch:
        assert switch.execute("PRAGMA journal_mode=DELETE").fetchone() == ("delete",)
    reader = connect(path)

    def read() -> None:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM auth_refresh_families").fetchall()

    store = SqliteRefreshTokenStore(str(path), busy_timeout=0.3)
    try:
        read()
        # Opening: the switch to WAL gives up after the busy timeout, the schema's COMMIT waits.
        opening = Waits(monkeypatch, at={1: lambda: reader.execute("COMMIT")})
        await store.migrate()
        assert len(opening.seconds) == 1
        read()
        writing = Waits(monkeypatch, at={2: lambda: reader.execute("COMMIT")})
        family = await Family(store).start()
        assert len(writing.seconds) == 2
        assert await family.active()
    finally:
        reader.close()
        await store.close()
    with closing(sqlite3.connect(path)) as check:
        assert check.execute("PRAGMA journal_mode").fetchone() == ("delete",)


class Clock:
    """``sqlite_connection``'s clock, moved by its waits only: what the write lock does at
    each moment, without timing it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1000.0
        self.slept: list[float] = []
        self.at: dict[int, Callable[[], object]] = {}
        monkeypatch.setattr(sqlite_connection, "monotonic", lambda: self.now)
        monkeypatch.setattr(sqlite_connection, "sleep", self.sleep)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        action = self.at.get(len(self.slept))
        if action is not None:
            action()
        self.now += seconds


def test_after_finding_the_lock_taken_a_connection_leaves_it_free_after_each_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "families.db"
    with closing(connect(path)) as other_writer, closing(connect(path)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA busy_timeout = 0")
        clock = Clock(monkeypatch)
        lock = sqlite_connection.WriteLock()

        def write() -> None:
            lock.begin(connection, clock.now + 1)
            connection.execute("PRAGMA user_version = 1")
            lock.commit(connection, clock.now + 1)

        # Alone: one transaction right after another, no wait.
        write()
        write()
        assert clock.slept == []
        # The other writer holds the lock: two tries find it taken, the third takes it.
        other_writer.execute("BEGIN IMMEDIATE")
        clock.at = {2: lambda: other_writer.execute("ROLLBACK")}
        write()
        assert len(clock.slept) == 2
        # From now on the next transaction begins no sooner than LET_IN after the last commit:
        # long enough for two tries of a writer waiting meanwhile.
        clock.slept.clear()
        clock.at = {}
        clock.now += sqlite_connection.LET_IN / 4
        write()
        assert clock.slept == [pytest.approx(sqlite_connection.LET_IN * 3 / 4)]
        assert 2 * sqlite_connection.LONGEST_WAIT <= sqlite_connection.LET_IN
        # A transaction that begins later than that does not wait.
        clock.slept.clear()
        clock.now += sqlite_connection.LET_IN
        write()
        assert clock.slept == []
        # Nor, once the lock was last found taken long enough ago, one right after a commit.
        clock.now += sqlite_connection.CONTENDED_FOR
        write()
        write()
        assert clock.slept == []
