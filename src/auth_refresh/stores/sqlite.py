"""``sqlite:///path/to/file.db``: token families in a SQLite file, shared by the processes of
one machine.

Each operation is a step: a function of the connection running the statements below (prepared
once, cached by the connection). The store's own thread runs the steps, never the event loop,
several in one transaction under load (``auth_refresh.stores.sqlite_worker``). A step that
cannot start within ``busy_timeout`` of being asked for fails with ``StoreUnavailableError``.

A subject's live families are indexed apart from its revoked ones (kept until they expire):
a page of sessions, the cap a login keeps and the revocations of a subject's sessions walk
those only, each one statement.

The file (and its ``-wal`` and ``-shm``) are readable by their owner only; its schema is
versioned and migrated (``auth_refresh.stores.sqlite_schema``).
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any, cast

from auth_refresh.exceptions import ConfigurationError
from auth_refresh.stores.base import (
    FamilyRecord,
    Rotation,
    RotationOutcome,
    SessionCursor,
    SessionRecord,
    SessionStart,
    Successor,
    decide_rotation,
    new_family_record,
)
from auth_refresh.stores.sqlite_connection import Step
from auth_refresh.stores.sqlite_schema import FIRST_USE_PROOF, PURGE_PROOFS
from auth_refresh.stores.sqlite_worker import SqliteWorker
from auth_refresh.types import TokenPair

__all__ = ["SqliteRefreshTokenStore"]

URL_PREFIX = "sqlite:///"
# Under the 2 s a client should wait for a 503, with room for the work itself.
BUSY_TIMEOUT_SECONDS = 1.0
PURGE_BATCH = 100

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
# A live session: neither revoked nor expired. "revoked = 0" as the live families' index has
# it (sqlite_schema.LIVE_INDEX): a statement of a subject's sessions walks that index only.
LIVE = "revoked = 0 AND expires_at > ?"
SESSION_ACTIVE = "SELECT 1 FROM auth_refresh_families WHERE session_id = ? AND " + LIVE  # noqa: S608
SESSION_COLUMNS = "session_id, created_at, refreshed_at, user_agent, client_ip"
LIST_SESSIONS = (
    f"SELECT {SESSION_COLUMNS} FROM auth_refresh_families "  # noqa: S608
    "WHERE subject = ? AND " + LIVE + " ORDER BY created_at DESC, session_id DESC LIMIT ?"
)
# The page after a cursor: keyset, so it starts where the index does, whatever came before.
LIST_SESSIONS_AFTER = (
    f"SELECT {SESSION_COLUMNS} FROM auth_refresh_families "  # noqa: S608
    "WHERE subject = ? AND " + LIVE + " AND (created_at, session_id) < (?, ?) "
    "ORDER BY created_at DESC, session_id DESC LIMIT ?"
)
# A login purges a batch of the families past the absolute lifetime (by the index of created_at,
# which no refresh moves); a family idle past its expiry goes then, or at its subject's login.
PURGE_PAST_LIFETIME = (
    "DELETE FROM auth_refresh_families WHERE family_id IN (SELECT family_id "
    "FROM auth_refresh_families WHERE created_at <= ? LIMIT ?)"
)
# A login takes the subject's expired families out of the live families' index.
PURGE_SUBJECT_EXPIRED = (
    "DELETE FROM auth_refresh_families WHERE subject = ? AND revoked = 0 AND expires_at <= ?"
)
REVOKE = "UPDATE auth_refresh_families SET revoked = 1, successor_pair = NULL WHERE "
# Beyond the cap: every live family of the subject but the new one and the most recently
# refreshed (max_sessions - 1) others.
REVOKE_BEYOND_CAP = (
    REVOKE + "family_id IN (SELECT family_id FROM auth_refresh_families "  # noqa: S608
    "WHERE subject = ? AND " + LIVE + " AND family_id <> ? "
    "ORDER BY coalesce(refreshed_at, created_at) DESC, created_at DESC, session_id DESC "
    "LIMIT -1 OFFSET ?)"
)
# Every family of the subject still in the index (an expired one too); a row per family,
# whether it was live.
REVOKE_SUBJECT = REVOKE + "subject = ? AND revoked = 0 RETURNING expires_at > ?"
REVOKE_OTHERS = REVOKE + "subject = ? AND " + LIVE + " AND session_id IS NOT ?"


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
        self._worker = SqliteWorker(self.path, busy_timeout)

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
        max_sessions: int,
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
            connection.execute(PURGE_PAST_LIFETIME, (now - absolute_lifetime, PURGE_BATCH))
            connection.execute(PURGE_SUBJECT_EXPIRED, (subject, now))
            connection.execute(INSERT_FAMILY, (*_row(record), family_id))
            # The same transaction (BEGIN IMMEDIATE): no other login of the subject between.
            connection.execute(
                REVOKE_BEYOND_CAP, (subject, now, family_id, max(0, max_sessions - 1))
            )

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

        # Whichever way it goes, one statement writes, and last: no savepoint is needed.
        return cast(Rotation, await self._run(rotate, savepoint=False))

    async def revoke_family(self, family_id: str) -> None:
        await self._run(
            lambda connection: connection.execute(REVOKE + "family_id = ?", (family_id,)),
            savepoint=False,
        )

    async def revoke_subject(self, subject: str, *, now: float) -> int:
        def revoke(connection: sqlite3.Connection) -> int:
            rows = connection.execute(REVOKE_SUBJECT, (subject, now)).fetchall()
            return sum(live for (live,) in rows)

        return cast(int, await self._run(revoke, savepoint=False))

    async def session_active(self, session_id: str, *, now: float) -> bool:
        def active(connection: sqlite3.Connection) -> bool:
            return connection.execute(SESSION_ACTIVE, (session_id, now)).fetchone() is not None

        return cast(bool, await self._run(active, savepoint=False))

    async def list_sessions(
        self, subject: str, *, now: float, limit: int, after: SessionCursor | None = None
    ) -> list[SessionRecord]:
        parameters: tuple[str | float, ...]
        if after is None:
            statement, parameters = LIST_SESSIONS, (subject, now, limit)
        else:
            # The cursor's created_at is the REAL this file answered with: compared exactly.
            statement = LIST_SESSIONS_AFTER
            parameters = (subject, now, after.created_at, after.session_id, limit)

        def sessions(connection: sqlite3.Connection) -> list[SessionRecord]:
            rows = connection.execute(statement, parameters).fetchall()
            return [
                SessionRecord(session_id, created_at, refreshed_at or created_at, agent, ip)
                for session_id, created_at, refreshed_at, agent, ip in rows
            ]

        return cast(list[SessionRecord], await self._run(sessions, savepoint=False))

    async def revoke_session(self, subject: str, session_id: str, *, now: float) -> bool:
        def revoke(connection: sqlite3.Connection) -> bool:
            cursor = connection.execute(
                REVOKE + "session_id = ? AND subject = ? AND " + LIVE, (session_id, subject, now)
            )
            return cursor.rowcount > 0

        return cast(bool, await self._run(revoke, savepoint=False))

    async def revoke_other_sessions(self, subject: str, keep: str | None, *, now: float) -> int:
        def revoke(connection: sqlite3.Connection) -> int:
            return connection.execute(REVOKE_OTHERS, (subject, now, keep)).rowcount

        return cast(int, await self._run(revoke, savepoint=False))

    async def migrate(self) -> int:
        """Open the file, migrating it to this release's schema now (the first step would);
        the schema's version."""

        def version(connection: sqlite3.Connection) -> int:
            found: int = connection.execute("PRAGMA user_version").fetchone()[0]
            return found

        result: int = await self._run(version, savepoint=False)
        return result

    async def close(self) -> None:
        await self._worker.close()

    async def _run(self, step: Step, *, savepoint: bool = True) -> Any:
        # savepoint=False: the step writes with one statement at most (sqlite_worker).
        return await self._worker.run(step, savepoint=savepoint)

    async def first_use(self, key: str, *, expires_at: float, now: float) -> bool:
        """``ProofReplayCache``: each step purges a batch of expired keys."""

        def record(connection: sqlite3.Connection) -> bool:
            connection.execute(PURGE_PROOFS, (now, PURGE_BATCH))
            return connection.execute(FIRST_USE_PROOF, (key, expires_at, now)).rowcount == 1

        return cast(bool, await self._run(record))


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
