"""``sqlite:///path/to/file.db``: token families in a SQLite file, shared by the processes of
one machine.

Each step is one transaction: SQLite's write lock serialises the steps of every process (WAL
keeps readers out of the way). The refresh of a live token is a single ``UPDATE ... RETURNING``;
anything else is read and decided under ``BEGIN IMMEDIATE``. Every step writes, so one process gains
nothing from several connections: each store has one connection. A step runs at once on the
caller's thread when the lock is free (a few tens of microseconds of page-cache I/O, no disk
sync: cheaper than handing it to a thread); when another writer holds the lock or the
connection is in use, it goes to the store's own thread and waits there, never on the event
loop. A step that cannot start and take the lock within
``busy_timeout`` of being asked for (another writer holds it, or the queue is long) fails with
``StoreUnavailableError`` instead of waiting on. The disk syncs, WAL checkpoints and the restart
of the WAL by the first step after one, happen on the store's thread too.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import Any, TypeVar, cast

from auth_refresh.authentication import TokenPair
from auth_refresh.exceptions import ConfigurationError, StoreUnavailableError
from auth_refresh.store import (
    FamilyRecord,
    Rotation,
    RotationOutcome,
    Successor,
    decide_rotation,
    new_family_record,
)

__all__ = ["SqliteRefreshTokenStore"]

URL_PREFIX = "sqlite:///"
# Under the 2 s a client should wait for a 503, with room for the work itself.
BUSY_TIMEOUT_SECONDS = 1.0
PURGE_BATCH = 100
# Steps between WAL checkpoints: a step writes about 4 pages, SQLite's default is 1000 pages.
CHECKPOINT_STEPS = 250

T = TypeVar("T")

store_log = logging.getLogger("auth_refresh.store")

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS auth_refresh_families (
        family_id TEXT PRIMARY KEY,
        subject TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        live_token_id TEXT NOT NULL,
        previous_token_id TEXT,
        consumed_at REAL,
        successor_pair TEXT,
        revoked INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS auth_refresh_families_subject ON auth_refresh_families (subject)",
    "CREATE INDEX IF NOT EXISTS auth_refresh_families_expires_at "
    "ON auth_refresh_families (expires_at)",
)

COLUMNS = (
    "subject, created_at, expires_at, live_token_id, previous_token_id, consumed_at, "
    "successor_pair, revoked"
)
# store.decide_rotation's ROTATED branch as one statement (the same double arithmetic): the
# family exists, is neither expired nor revoked, and token_id is its live token.
ROTATE_LIVE = """UPDATE auth_refresh_families
    SET expires_at = min(:successor_expires_at, created_at + :lifetime),
        live_token_id = :successor_id, previous_token_id = live_token_id, consumed_at = :now,
        successor_pair = :successor_pair
    WHERE family_id = :family_id AND live_token_id = :token_id AND revoked = 0
        AND :now < created_at + :lifetime AND :now < expires_at
    RETURNING subject"""
# The columns are named as FamilyRecord's fields.
FIELDS = tuple(name.strip() for name in COLUMNS.split(","))


class SqliteRefreshTokenStore:
    """Families in one SQLite file (WAL); safe for several worker processes on one machine."""

    def __init__(
        self,
        path: str,
        *,
        busy_timeout: float = BUSY_TIMEOUT_SECONDS,
    ) -> None:
        if not path or path == ":memory:" or path.startswith("file:"):
            raise ConfigurationError(
                "sqlite:/// needs a file path (sqlite:///relative.db, sqlite:////absolute.db); "
                "use memory:// for a store in memory"
            )
        # Resolved now: a relative path means the working directory at startup.
        self.path = os.path.abspath(path)
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            raise ConfigurationError(f"the SQLite store's directory does not exist: {directory}")
        self.busy_timeout = busy_timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="auth-refresh-sqlite")
        # Opened on the executor's thread; used by whichever thread holds the lock, one at a time.
        self._connection: sqlite3.Connection | None = None
        self._connection_lock = threading.Lock()
        self._busy_timeout_ms: int | None = None
        self._steps_since_checkpoint = 0
        # After a checkpoint the next write starts the WAL over and syncs its header: that step
        # goes to the store's thread, behind the checkpoint.
        self._restart_due = False
        # Used on the executor's thread only.
        self._checkpoint_connection: sqlite3.Connection | None = None

    @classmethod
    def from_url(cls, url: str) -> SqliteRefreshTokenStore:
        """``sqlite:///relative/file.db`` or ``sqlite:////absolute/file.db`` (as SQLAlchemy)."""
        if not url.startswith(URL_PREFIX):
            raise ConfigurationError("a SQLite store URL starts with sqlite:///")
        return cls(url.removeprefix(URL_PREFIX))

    async def start_family(
        self,
        family_id: str,
        subject: str,
        token_id: str,
        *,
        token_expires_at: float,
        now: float,
        absolute_lifetime: float,
    ) -> None:
        record = new_family_record(
            subject,
            token_id,
            token_expires_at=token_expires_at,
            now=now,
            absolute_lifetime=absolute_lifetime,
        )

        def start(connection: sqlite3.Connection) -> None:
            with _immediate(connection):
                connection.execute(
                    "DELETE FROM auth_refresh_families WHERE family_id IN (SELECT family_id "
                    "FROM auth_refresh_families WHERE expires_at <= ? LIMIT ?)",
                    (now, PURGE_BATCH),
                )
                _insert(connection, family_id, record)

        await self._run(start)

    async def rotate(
        self,
        family_id: str,
        token_id: str,
        successor: Successor,
        *,
        now: float,
        grace_seconds: float,
        absolute_lifetime: float,
    ) -> Rotation:
        pair = json.dumps(successor.pair) if grace_seconds > 0 else None

        def rotate(connection: sqlite3.Connection) -> Rotation:
            # The live token, as nearly every refresh presents: one statement, its own
            # transaction. Anything else is decided in Python on the row read under the lock.
            rotated = connection.execute(
                ROTATE_LIVE,
                {
                    "successor_expires_at": successor.expires_at,
                    "lifetime": absolute_lifetime,
                    "successor_id": successor.token_id,
                    "now": now,
                    "successor_pair": pair,
                    "family_id": family_id,
                    "token_id": token_id,
                },
            ).fetchall()  # to the end: the statement's transaction commits when it is done
            if rotated:
                return Rotation(RotationOutcome.ROTATED, rotated[0][0], successor.pair)
            with _immediate(connection):
                row = connection.execute(
                    f"SELECT {COLUMNS} FROM auth_refresh_families WHERE family_id = ?",  # noqa: S608
                    (family_id,),
                ).fetchone()
                record = _record(row) if row is not None else None
                rotation, updated = decide_rotation(
                    record,
                    token_id,
                    successor,
                    now=now,
                    grace_seconds=grace_seconds,
                    absolute_lifetime=absolute_lifetime,
                )
                if updated is None and record is not None:
                    connection.execute(
                        "DELETE FROM auth_refresh_families WHERE family_id = ?", (family_id,)
                    )
                elif updated is not None and record is not None and updated != record:
                    _update(connection, family_id, record, updated)
                return rotation

        return await self._run(rotate)

    async def revoke_family(self, family_id: str) -> None:
        def revoke(connection: sqlite3.Connection) -> None:
            with _immediate(connection):
                connection.execute(
                    "UPDATE auth_refresh_families SET revoked = 1, successor_pair = NULL "
                    "WHERE family_id = ?",
                    (family_id,),
                )

        await self._run(revoke)

    async def revoke_subject(self, subject: str) -> None:
        def revoke(connection: sqlite3.Connection) -> None:
            with _immediate(connection):
                connection.execute(
                    "UPDATE auth_refresh_families SET revoked = 1, successor_pair = NULL "
                    "WHERE subject = ?",
                    (subject,),
                )

        await self._run(revoke)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._close)

    def _close(self) -> None:
        self._executor.shutdown(wait=True)
        if self._checkpoint_connection is not None:
            self._checkpoint_connection.close()
            self._checkpoint_connection = None
        with self._connection_lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    async def _run(self, step: Callable[[sqlite3.Connection], T]) -> T:
        deadline = time.monotonic() + self.busy_timeout
        try:
            # To the store's thread when the connection is not opened yet or in use by another
            # thread's step, and while the WAL's restart is due. Not whenever steps are queued
            # there: under load the queue would never drain, and every step would pay the
            # hand-off.
            if (
                not self._restart_due
                and self._connection is not None
                and self._connection_lock.acquire(blocking=False)
            ):
                try:
                    return self._call_at_once(step)
                except _DatabaseBusy:
                    pass  # nothing was written: wait on the store's thread instead
                finally:
                    self._connection_lock.release()
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._call, step, deadline)
        except (sqlite3.Error, ValueError) as error:
            # "database is locked" after busy_timeout, I/O errors, a corrupt file or row (a
            # successor pair that is not JSON): fail closed.
            store_log.warning("SQLite store unavailable: %s: %s", type(error).__name__, error)
            raise StoreUnavailableError() from None

    def _call_at_once(self, step: Callable[[sqlite3.Connection], T]) -> T:
        # The caller holds the connection lock. No busy handler: a held lock fails at once.
        connection = self._connection
        assert connection is not None
        self._set_busy_timeout(connection, 0)
        try:
            result = step(connection)
        except sqlite3.OperationalError as error:
            # The step's transaction was rolled back (_immediate), so it can run again.
            if error.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:
                raise _DatabaseBusy() from None
            raise
        self._checkpoint_when_due()
        return result

    def _call(self, step: Callable[[sqlite3.Connection], T], deadline: float) -> T:
        # The time spent queued counts: the wait for the lock gets what is left.
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not self._connection_lock.acquire(timeout=remaining):
            raise sqlite3.OperationalError("queued longer than the busy timeout")
        try:
            connection = self._connection or self._open()
            remaining = deadline - time.monotonic()
            self._set_busy_timeout(connection, max(1, int(remaining * 1000)))
            result = step(connection)
            self._restart_due = False
            self._checkpoint_when_due()
            return result
        finally:
            self._connection_lock.release()

    def _set_busy_timeout(self, connection: sqlite3.Connection, milliseconds: int) -> None:
        if milliseconds != self._busy_timeout_ms:
            connection.execute(f"PRAGMA busy_timeout = {milliseconds}")
            self._busy_timeout_ms = milliseconds

    def _checkpoint_when_due(self) -> None:
        # SQLite's automatic checkpoint would sync the files in whichever step crosses its
        # threshold, possibly on the event loop: it is off, and the store's thread does it.
        # The caller holds the connection lock.
        self._steps_since_checkpoint += 1
        if self._steps_since_checkpoint >= CHECKPOINT_STEPS:
            self._steps_since_checkpoint = 0
            # RuntimeError: closing, and the last connection to close checkpoints the file.
            with suppress(RuntimeError):
                self._executor.submit(self._checkpoint)
                self._restart_due = True

    def _checkpoint(self) -> None:
        try:
            # The bulk on a connection of its own, beside the steps (WAL lets them append
            # meanwhile): the event loop does not wait for these disk syncs.
            if self._checkpoint_connection is None:
                self._checkpoint_connection = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False
                )
            self._checkpoint_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
            # Then the few frames appended meanwhile, between two steps: only a WAL copied to
            # its last frame is started over by the next step instead of growing on.
            if self._connection_lock.acquire(timeout=self.busy_timeout):
                try:
                    if self._connection is not None:
                        self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
                finally:
                    self._connection_lock.release()
        except sqlite3.Error as error:
            # Another process checkpointing, a full disk: the next checkpoint tries again.
            store_log.info("SQLite store: checkpoint not done: %s", error)

    def _open(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            _use_wal(connection)
            # With WAL, NORMAL syncs at checkpoints: a power cut may lose the last steps, never
            # corrupt the file.
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA wal_autocheckpoint=0")
            # IMMEDIATE: processes starting together on a new file wait for each other here.
            with _immediate(connection):
                for statement in SCHEMA:
                    connection.execute(statement)
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        return connection


class _DatabaseBusy(Exception):
    """Another connection holds the write lock; the step wrote nothing."""


def _use_wal(connection: sqlite3.Connection) -> None:
    # The journal mode is kept in the file: once one connection switches it, it stays.
    try:
        connection.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError as error:
        # Another process switching it at this moment: correct without WAL, only slower, and
        # the next connection tries again.
        store_log.info("SQLite store: journal mode not switched to WAL yet: %s", error)


@contextmanager
def _immediate(connection: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock before the read, so two steps never decide on one state.
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
        # Inside the try: a COMMIT that fails (busy, I/O) leaves nothing half-written either.
        connection.execute("COMMIT")
    except BaseException:
        # SQLite rolls some errors back itself; a second ROLLBACK would hide the first error.
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def _record(row: tuple[Any, ...]) -> FamilyRecord:
    (subject, created_at, expires_at, live, previous, consumed_at, pair, revoked) = row
    return FamilyRecord(
        subject=subject,
        created_at=created_at,
        expires_at=expires_at,
        live_token_id=live,
        previous_token_id=previous,
        consumed_at=consumed_at,
        successor_pair=cast(TokenPair, json.loads(pair)) if pair is not None else None,
        revoked=bool(revoked),
    )


def _insert(connection: sqlite3.Connection, family_id: str, record: FamilyRecord) -> None:
    connection.execute(
        f"INSERT INTO auth_refresh_families ({COLUMNS}, family_id) "  # noqa: S608
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (*(_column_value(record, name) for name in FIELDS), family_id),
    )


def _update(
    connection: sqlite3.Connection, family_id: str, before: FamilyRecord, after: FamilyRecord
) -> None:
    # Only the columns that changed: setting an indexed column (subject) to its own value would
    # still rewrite its index entry, a third of a rotation's cost.
    changed = tuple(name for name in FIELDS if getattr(before, name) != getattr(after, name))
    connection.execute(
        _update_statement(changed),
        (*(_column_value(after, name) for name in changed), family_id),
    )


@functools.cache
def _update_statement(columns: tuple[str, ...]) -> str:
    assignments = ", ".join(f"{name} = ?" for name in columns)
    return f"UPDATE auth_refresh_families SET {assignments} WHERE family_id = ?"  # noqa: S608


def _column_value(record: FamilyRecord, name: str) -> Any:
    value = getattr(record, name)
    if name == "successor_pair":
        return json.dumps(value) if value is not None else None
    if name == "revoked":
        return int(value)
    return value
