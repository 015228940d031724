"""The SQLite store's connection to its file: opened (the file private, in WAL mode, migrated),
its write lock taken in turn with other processes' connections, and a step run in a savepoint
of the transaction it shares.

The wait for the lock is ours, not SQLite's busy handler: that one sleeps 1, 2, 5, 10, ... then
100 ms between tries, while another worker process holds the lock for well under a millisecond
at a time, so under load a process that lost the lock once slept on while the other took it
again and again (two workers at saturation: p99 about 500 ms, docs/scaling.md). Here a connection
that finds the file locked tries again after a short random wait (25 to 50 µs at first,
doubling up to 125 to 250 µs), until the same deadline SQLite's ``busy_timeout`` would have
kept. And a connection that lately found the lock taken (another process writes too) leaves the
lock free for a moment after each commit before it begins again, so the other's next try finds
it free: otherwise a process with steps queued would take it back within microseconds, and
the other could wait for tens of milliseconds.

Used on the store's own thread only (``auth_refresh.stores.sqlite_worker``): the waits block
that thread, never an event loop.
"""

from __future__ import annotations

import math
import random
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic, sleep
from typing import Any

from auth_refresh.stores.sqlite_schema import create_private, upgrade, use_wal

__all__ = [
    "CONTENDED_FOR",
    "LET_IN",
    "LONGEST_WAIT",
    "Step",
    "WriteLock",
    "execute_when_free",
    "in_savepoint",
    "on_its_own",
    "open_connection",
]

# One step of the store: run on the connection inside a write transaction; its result.
Step = Callable[[sqlite3.Connection], Any]
# The first wait between two tries for a locked file, and the longest (seconds); each wait is
# between half of it and all of it, at random, so two waiting processes do not try in step.
FIRST_WAIT = 0.00005
LONGEST_WAIT = 0.00025
# How long after its last commit a connection that lately found the lock taken leaves it free:
# time for two tries of a writer waiting for it. "Lately": within CONTENDED_FOR seconds.
LET_IN = 2 * LONGEST_WAIT
CONTENDED_FOR = 1.0


def open_connection(path: str, busy_timeout: float) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are begun by hand) to the file at
    ``path``, created private and migrated to this release's schema; each statement waits up
    to ``busy_timeout`` for a lock it needs."""
    create_private(path)
    # SQLite's busy handler for switching a new file to WAL (once per file); ours from then on.
    connection = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    try:
        use_wal(connection)
        # With WAL, NORMAL syncs at checkpoints only (on this thread): a power cut may lose
        # the last steps, never corrupt the file.
        connection.execute("PRAGMA synchronous=NORMAL")
        # A locked file answers at once: execute_when_free waits for it, as it does for the
        # steps of connections already open, so those do not take the lock from this one.
        connection.execute("PRAGMA busy_timeout = 0")
        # IMMEDIATE: processes starting together on a new file wait for each other here.
        execute_when_free(connection, "BEGIN IMMEDIATE", monotonic() + busy_timeout)
        try:
            upgrade(connection)
            execute_when_free(connection, "COMMIT", monotonic() + busy_timeout)
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
    except BaseException:
        connection.close()
        raise
    return connection


def execute_when_free(connection: sqlite3.Connection, sql: str, deadline: float) -> int:
    """Run ``sql`` (``BEGIN IMMEDIATE``, ``COMMIT``), trying again while another connection
    holds a lock it needs, until ``deadline`` (``time.monotonic()``); then SQLite's own error
    ("database is locked"). How many tries it took."""
    wait = FIRST_WAIT
    tries = 0
    while True:
        tries += 1
        try:
            connection.execute(sql)
            return tries
        except sqlite3.OperationalError as error:
            # A COMMIT that finds the file busy (readers of a file not yet in WAL mode) leaves
            # the transaction open: trying it again is what SQLite's busy handler would do.
            left = deadline - monotonic()
            code = getattr(error, "sqlite_errorcode", 0)
            if code & 0xFF != sqlite3.SQLITE_BUSY or left <= 0:
                raise
        # Jitter, not a secret: the pseudo-random generator is fine here.
        sleep(min(left, random.uniform(wait / 2, wait)))  # noqa: S311
        wait = min(LONGEST_WAIT, wait * 2)


@dataclass
class WriteLock:
    """The file's write lock as one connection takes it, in turn with other processes'."""

    # When this connection last found the lock taken, and last committed (time.monotonic()).
    contended_at: float = -math.inf
    committed_at: float = -math.inf

    def begin(self, connection: sqlite3.Connection, deadline: float) -> None:
        """``BEGIN IMMEDIATE`` (the lock is had until ``commit``), or "database is locked" at
        ``deadline``."""
        now = monotonic()
        if now - self.contended_at < CONTENDED_FOR:
            # Another process writes too: it may be waiting for the lock this one just let go.
            gap = self.committed_at + LET_IN - now
            if gap > 0:
                sleep(gap)
        if execute_when_free(connection, "BEGIN IMMEDIATE", deadline) > 1:
            self.contended_at = monotonic()

    def commit(self, connection: sqlite3.Connection, deadline: float) -> None:
        execute_when_free(connection, "COMMIT", deadline)
        self.committed_at = monotonic()


def on_its_own(connection: sqlite3.Connection, step: Step) -> tuple[Any, BaseException | None]:
    """Run ``step``, which writes with one statement at most, without a savepoint: SQLite
    undoes a statement that fails itself. Its result, or the error it raised."""
    # Two statements fewer per step than in_savepoint.
    try:
        return step(connection), None
    except Exception as error:
        if not connection.in_transaction:
            raise  # SQLite rolled the whole transaction back (I/O, full disk): the batch fails
        return None, error


def in_savepoint(connection: sqlite3.Connection, step: Step) -> tuple[Any, BaseException | None]:
    """Run ``step`` in a savepoint: its result, or the error that undid it."""
    # One step's failure (a corrupt row) undoes that step only, not the batch.
    connection.execute("SAVEPOINT step")
    try:
        result = step(connection)
    except Exception as error:
        if not connection.in_transaction:
            raise  # SQLite rolled the whole transaction back (I/O, full disk): the batch fails
        connection.execute("ROLLBACK TO step")
        connection.execute("RELEASE step")
        return None, error
    connection.execute("RELEASE step")
    return result, None
