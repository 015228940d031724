"""``sqlite:///path/to/file.db``: token families in a SQLite file, shared by the processes of
one machine.

Every step runs on the store's own thread, never on the event loop. The steps one pass of an
event loop asks for are handed over together (one wake-up), and the thread takes those queued
meanwhile with them: it runs each in a savepoint of one ``BEGIN IMMEDIATE`` transaction and
commits once (group commit), so under load one lock, one commit and one hand-back to each
event loop serve a batch. SQLite's write lock serialises the batches of every process (WAL keeps
readers out of the way). A step that cannot start within ``busy_timeout`` of being asked for
(another writer holds the lock, or the queue is long) fails with ``StoreUnavailableError``.
Statements are prepared once and cached by the connection.

The file (and its ``-wal`` and ``-shm``) are readable by their owner only; its schema is
versioned and migrated (``auth_refresh.sqlite_schema``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, cast

from auth_refresh.exceptions import ConfigurationError, StoreUnavailableError
from auth_refresh.stores.base import (
    FamilyRecord,
    Rotation,
    RotationOutcome,
    SessionRecord,
    SessionStart,
    Successor,
    decide_rotation,
    new_family_record,
)
from auth_refresh.stores.sqlite_schema import create_private, upgrade, use_wal
from auth_refresh.types import TokenPair

__all__ = ["SqliteRefreshTokenStore"]

URL_PREFIX = "sqlite:///"
# Under the 2 s a client should wait for a 503, with room for the work itself.
BUSY_TIMEOUT_SECONDS = 1.0
PURGE_BATCH = 100
# The most steps one transaction takes: a long batch would hold the write lock long.
MAX_BATCH = 64
BUSY_TIMEOUT_SLACK_MS = 100

store_log = logging.getLogger("auth_refresh.store")

COLUMNS = (
    "subject, created_at, expires_at, live_token_id, previous_token_id, consumed_at, "
    "successor_pair, revoked, session_id, refreshed_at, user_agent, client_ip"
)
# store.decide_rotation's ROTATED branch as one statement (the same double arithmetic): the
# family exists, is neither expired nor revoked, and token_id is its live token.
ROTATE_LIVE = """UPDATE auth_refresh_families
    SET expires_at = min(:successor_expires_at, created_at + :lifetime),
        live_token_id = :successor_id, previous_token_id = live_token_id, consumed_at = :now,
        successor_pair = :successor_pair, refreshed_at = :now
    WHERE family_id = :family_id AND live_token_id = :token_id AND revoked = 0
        AND :now < created_at + :lifetime AND :now < expires_at
    RETURNING subject"""
SELECT_FAMILY = f"SELECT {COLUMNS} FROM auth_refresh_families WHERE family_id = ?"  # noqa: S608
INSERT_FAMILY = (
    f"INSERT INTO auth_refresh_families ({COLUMNS}, family_id) "  # noqa: S608
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
UPDATE_FAMILY = (
    "UPDATE auth_refresh_families SET expires_at = ?, live_token_id = ?, previous_token_id = ?, "
    "consumed_at = ?, successor_pair = ?, revoked = ?, refreshed_at = ? WHERE family_id = ?"
)
# A live session: neither revoked nor expired.
LIVE = "revoked = 0 AND expires_at > ?"
SESSION_ACTIVE = "SELECT 1 FROM auth_refresh_families WHERE session_id = ? AND " + LIVE  # noqa: S608
LIST_SESSIONS = (
    "SELECT session_id, created_at, refreshed_at, user_agent, client_ip "
    "FROM auth_refresh_families WHERE subject = ? AND " + LIVE + " ORDER BY created_at DESC"
)
PURGE_EXPIRED = (
    "DELETE FROM auth_refresh_families WHERE family_id IN (SELECT family_id "
    "FROM auth_refresh_families WHERE expires_at <= ? LIMIT ?)"
)
REVOKE = "UPDATE auth_refresh_families SET revoked = 1, successor_pair = NULL WHERE "

Step = Callable[[sqlite3.Connection], Any]


@dataclass(slots=True)
class _Queued:
    step: Step
    deadline: float
    loop: asyncio.AbstractEventLoop
    answer: asyncio.Future[Any] = field(init=False)

    def __post_init__(self) -> None:
        self.answer = self.loop.create_future()


class SqliteRefreshTokenStore:
    """Families in one SQLite file (WAL); safe for several worker processes on one machine."""

    def __init__(self, path: str, *, busy_timeout: float = BUSY_TIMEOUT_SECONDS) -> None:
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
        self._queue: queue.SimpleQueue[list[_Queued] | None] = queue.SimpleQueue()
        self._pending: dict[asyncio.AbstractEventLoop, list[_Queued]] = {}
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self._busy_ms = 0  # the connection's busy_timeout; used on the store's thread only

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
        session: SessionStart,
    ) -> None:
        record = new_family_record(
            subject,
            token_id,
            token_expires_at=token_expires_at,
            now=now,
            absolute_lifetime=absolute_lifetime,
            session=session,
        )

        def start(connection: sqlite3.Connection) -> None:
            connection.execute(PURGE_EXPIRED, (now, PURGE_BATCH))
            connection.execute(INSERT_FAMILY, (*_row(record), family_id))

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
            # The live token, as nearly every refresh presents: one statement. Anything else
            # is decided in Python on the row, within the same transaction.
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
            ).fetchall()
            if rotated:
                return Rotation(RotationOutcome.ROTATED, rotated[0][0], successor.pair)
            row = connection.execute(SELECT_FAMILY, (family_id,)).fetchone()
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
            elif updated is not None and updated != record:
                connection.execute(
                    UPDATE_FAMILY, (*_row(updated)[2:8], updated.refreshed_at, family_id)
                )
            return rotation

        return cast(Rotation, await self._run(rotate))

    async def revoke_family(self, family_id: str) -> None:
        await self._run(
            lambda connection: connection.execute(REVOKE + "family_id = ?", (family_id,))
        )

    async def revoke_subject(self, subject: str) -> None:
        await self._run(lambda connection: connection.execute(REVOKE + "subject = ?", (subject,)))

    async def session_active(self, session_id: str, *, now: float) -> bool:
        def active(connection: sqlite3.Connection) -> bool:
            return connection.execute(SESSION_ACTIVE, (session_id, now)).fetchone() is not None

        return cast(bool, await self._run(active))

    async def list_sessions(self, subject: str, *, now: float) -> list[SessionRecord]:
        def sessions(connection: sqlite3.Connection) -> list[SessionRecord]:
            rows = connection.execute(LIST_SESSIONS, (subject, now)).fetchall()
            return [
                SessionRecord(session_id, created_at, refreshed_at or created_at, agent, ip)
                for session_id, created_at, refreshed_at, agent, ip in rows
            ]

        return cast(list[SessionRecord], await self._run(sessions))

    async def revoke_session(self, subject: str, session_id: str, *, now: float) -> bool:
        def revoke(connection: sqlite3.Connection) -> bool:
            cursor = connection.execute(
                REVOKE + "session_id = ? AND subject = ? AND " + LIVE, (session_id, subject, now)
            )
            return cursor.rowcount > 0

        return cast(bool, await self._run(revoke))

    async def migrate(self) -> int:
        """Open the file, migrating it to this release's schema now (the first step would);
        the schema's version."""

        def version(connection: sqlite3.Connection) -> int:
            found: int = connection.execute("PRAGMA user_version").fetchone()[0]
            return found

        result: int = await self._run(version)
        return result

    async def close(self) -> None:
        self._closed = True
        thread = self._thread
        if thread is not None:
            # Steps asked for in this pass of the loop go first.
            pending = self._pending.pop(asyncio.get_running_loop(), None)
            if pending:
                self._queue.put(pending)
            self._queue.put(None)
            await asyncio.get_running_loop().run_in_executor(None, thread.join)

    async def _run(self, step: Step) -> Any:
        if self._closed:
            raise StoreUnavailableError()
        if self._thread is None:
            self._start_thread()
        loop = asyncio.get_running_loop()
        queued = _Queued(step, time.monotonic() + self.busy_timeout, loop)
        # The steps one pass of the event loop asks for go to the thread together: one wake-up.
        pending = self._pending.get(loop)
        if pending is None:
            pending = self._pending[loop] = []
            loop.call_soon(self._hand_over, loop)
        pending.append(queued)
        return await queued.answer

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        self._queue.put(self._pending.pop(loop))

    def _start_thread(self) -> None:
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(
                    target=self._serve, name="auth-refresh-sqlite", daemon=True
                )
                thread.start()
                self._thread = thread

    def _serve(self) -> None:
        connection: sqlite3.Connection | None = None
        try:
            while (first := self._queue.get()) is not None:
                batch = list(first)
                stop = False
                while len(batch) < MAX_BATCH:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    batch += more
                connection = self._run_batch(connection, batch)
                if stop:
                    break
        finally:
            if connection is not None:
                connection.close()

    def _run_batch(
        self, connection: sqlite3.Connection | None, batch: list[_Queued]
    ) -> sqlite3.Connection | None:
        now = time.monotonic()
        timed_out = sqlite3.OperationalError("queued longer than the busy timeout")
        answers: list[tuple[_Queued, Any, BaseException | None]] = [
            (queued, None, timed_out) for queued in batch if queued.deadline <= now
        ]
        live = [queued for queued in batch if queued.deadline > now and not queued.answer.done()]
        if not live:
            _answer(answers)
            return connection
        settled = len(answers)
        try:
            remaining = min(queued.deadline for queued in live) - now
            connection = connection or self._open()
            # Every statement is a hand-over of the GIL: the timeout is set when it moved.
            busy_ms = max(1, int(remaining * 1000))
            if abs(busy_ms - self._busy_ms) > BUSY_TIMEOUT_SLACK_MS:
                connection.execute(f"PRAGMA busy_timeout = {busy_ms:d}")
                self._busy_ms = busy_ms
            connection.execute("BEGIN IMMEDIATE")
            try:
                if len(live) == 1:
                    # Alone in its transaction: the transaction is its savepoint.
                    result = live[0].step(connection)
                    answers.append((live[0], result, None))
                else:
                    for queued in live:
                        answers.append((queued, *_in_savepoint(connection, queued.step)))
                # Inside the try: a COMMIT that fails leaves nothing half-written either.
                connection.execute("COMMIT")
            except BaseException:
                # SQLite rolls some errors back itself; a second ROLLBACK would hide the first.
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        except Exception as error:
            # Whatever went wrong (a locked or broken file, an unexpected error): every step
            # of the batch fails closed, and the thread serves the next batch.
            answers[settled:] = [(queued, None, error) for queued in live]
        _answer(answers)
        return connection

    def _open(self) -> sqlite3.Connection:
        create_private(self.path)
        connection = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            use_wal(connection)
            # With WAL, NORMAL syncs at checkpoints only (on this thread): a power cut may lose
            # the last steps, never corrupt the file.
            connection.execute("PRAGMA synchronous=NORMAL")
            # IMMEDIATE: processes starting together on a new file wait for each other here.
            connection.execute("BEGIN IMMEDIATE")
            try:
                upgrade(connection)
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        except BaseException:
            connection.close()
            raise
        return connection


def _in_savepoint(connection: sqlite3.Connection, step: Step) -> tuple[Any, BaseException | None]:
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


def _answer(answers: list[tuple[_Queued, Any, BaseException | None]]) -> None:
    # One wake-up per event loop for the whole batch.
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Queued, Any, BaseException | None]]] = {}
    for answer in answers:
        by_loop.setdefault(answer[0].loop, []).append(answer)
    for loop, loop_answers in by_loop.items():
        # RuntimeError: the loop is closed, nobody waits for these answers.
        with suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, loop_answers)


def _settle(answers: list[tuple[_Queued, Any, BaseException | None]]) -> None:
    for queued, result, error in answers:
        if queued.answer.done():
            continue  # the caller went away (its request was cancelled)
        if isinstance(error, ConfigurationError):
            queued.answer.set_exception(error)
        elif error is not None:
            # "database is locked" after busy_timeout, I/O errors, a corrupt file or row:
            # fail closed.
            store_log.warning("SQLite store unavailable: %s: %s", type(error).__name__, error)
            queued.answer.set_exception(StoreUnavailableError())
        else:
            queued.answer.set_result(result)


def _record(row: tuple[Any, ...]) -> FamilyRecord:
    (subject, created_at, expires_at, live, previous, consumed_at, pair, revoked) = row[:8]
    session_id, refreshed_at, user_agent, client_ip = row[8:]
    return FamilyRecord(
        subject=subject,
        created_at=created_at,
        expires_at=expires_at,
        live_token_id=live,
        previous_token_id=previous,
        consumed_at=consumed_at,
        successor_pair=cast(TokenPair, json.loads(pair)) if pair is not None else None,
        revoked=bool(revoked),
        session_id=session_id,
        refreshed_at=refreshed_at,
        user_agent=user_agent,
        client_ip=client_ip,
    )


def _row(record: FamilyRecord) -> tuple[Any, ...]:
    # In COLUMNS' order.
    pair = record.successor_pair
    return (
        record.subject,
        record.created_at,
        record.expires_at,
        record.live_token_id,
        record.previous_token_id,
        record.consumed_at,
        json.dumps(pair) if pair is not None else None,
        int(record.revoked),
        record.session_id,
        record.refreshed_at,
        record.user_agent,
        record.client_ip,
    )
