"""The SQLite store's file: created private, in WAL mode, its table and the table's migrations,
versioned in ``PRAGMA user_version``.

Version 1 is the table of the first releases (``user_version`` 0): token ids and the grace pair
in the clear. Version 2 keeps them as ``stores.sealing`` makes them. Version 3 adds the
session each family is: its id, when it was last refreshed and its client label. Version 4
indexes the live families only (not revoked), by subject in list order, in place of the index
of every family by subject: a subject's revoked families, kept until they expire, are never
walked. Version 5 adds the DPoP proofs seen (``auth_refresh_proofs``). A migration is a
function of the open connection, run inside the transaction that sets the new version; adding
one means writing it, listing it in ``MIGRATIONS`` and raising ``SCHEMA_VERSION``.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
from collections.abc import Callable

from auth_refresh.exceptions import ConfigurationError
from auth_refresh.stores.sealing import seal_pair, session_id_of, token_digest

__all__ = [
    "FIRST_USE_PROOF",
    "PURGE_PROOFS",
    "SCHEMA_VERSION",
    "create_private",
    "upgrade",
    "use_wal",
]

store_log = logging.getLogger("auth_refresh.store")

SCHEMA_VERSION = 6

TABLE = """CREATE TABLE auth_refresh_families (
    family_id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    live_token_id TEXT NOT NULL,
    previous_token_id TEXT,
    consumed_at REAL,
    successor_pair TEXT,
    revoked INTEGER NOT NULL DEFAULT 0,
    session_id TEXT NOT NULL,
    refreshed_at REAL,
    user_agent TEXT,
    client_ip TEXT
)"""
SESSION_INDEX = (
    "CREATE UNIQUE INDEX auth_refresh_families_session ON auth_refresh_families (session_id)"
)
# A subject's live families in list order (newest first): the list, the cap and the
# revocations walk these, never the subject's revoked ones.
LIVE_INDEX = (
    "CREATE INDEX auth_refresh_families_live ON auth_refresh_families "
    "(subject, created_at DESC, session_id DESC) WHERE revoked = 0"
)
# Families by age, for the purge of those past the absolute lifetime. Not by expires_at: every
# refresh moves that, and each index entry moved is another page written per refresh.
AGE_INDEX = "CREATE INDEX auth_refresh_families_created_at ON auth_refresh_families (created_at)"
INDEXES = (LIVE_INDEX, AGE_INDEX, SESSION_INDEX)

# The DPoP proofs seen (ProofReplayCache), each until its window ends.
PROOFS = (
    "CREATE TABLE auth_refresh_proofs (key TEXT PRIMARY KEY, expires_at REAL NOT NULL) "
    "WITHOUT ROWID",
    "CREATE INDEX auth_refresh_proofs_expires_at ON auth_refresh_proofs (expires_at)",
)
# A key recorded and unexpired is a replay: no row changes.
FIRST_USE_PROOF = (
    "INSERT INTO auth_refresh_proofs (key, expires_at) VALUES (?, ?) ON CONFLICT (key) "
    "DO UPDATE SET expires_at = excluded.expires_at WHERE auth_refresh_proofs.expires_at <= ?"
)
PURGE_PROOFS = (
    "DELETE FROM auth_refresh_proofs WHERE key IN (SELECT key FROM auth_refresh_proofs "
    "WHERE expires_at <= ? LIMIT ?)"
)


def _create(connection: sqlite3.Connection) -> None:
    for statement in (TABLE, *INDEXES, *PROOFS):
        connection.execute(statement)


def _seal_tokens(connection: sqlite3.Connection) -> None:
    # 1 -> 2: ids become digests; each grace pair is sealed under its consumed token's id,
    # still known here in the clear, so a repeat within the window keeps working across it.
    rows = connection.execute(
        "SELECT family_id, live_token_id, previous_token_id, successor_pair "
        "FROM auth_refresh_families"
    ).fetchall()
    for family_id, live, previous, pair in rows:
        sealed = None
        if previous is not None and pair is not None:
            sealed = json.dumps(seal_pair(json.loads(pair), previous, family_id))
        connection.execute(
            "UPDATE auth_refresh_families SET live_token_id = ?, previous_token_id = ?, "
            "successor_pair = ? WHERE family_id = ?",
            (
                token_digest(live),
                token_digest(previous) if previous is not None else None,
                sealed,
                family_id,
            ),
        )


def _add_sessions(connection: sqlite3.Connection) -> None:
    # 2 -> 3: every family is a session; those started before have no client label.
    connection.execute(
        "ALTER TABLE auth_refresh_families ADD COLUMN session_id TEXT NOT NULL DEFAULT ''"
    )
    for column in ("refreshed_at REAL", "user_agent TEXT", "client_ip TEXT"):
        connection.execute(f"ALTER TABLE auth_refresh_families ADD COLUMN {column}")
    families = connection.execute("SELECT family_id FROM auth_refresh_families").fetchall()
    connection.executemany(
        "UPDATE auth_refresh_families SET session_id = ? WHERE family_id = ?",
        [(session_id_of(family_id), family_id) for (family_id,) in families],
    )
    connection.execute(SESSION_INDEX)


def _index_live_families(connection: sqlite3.Connection) -> None:
    # 3 -> 4: the index of every family by subject gives way to the live families' index.
    connection.execute("DROP INDEX IF EXISTS auth_refresh_families_subject")
    connection.execute(LIVE_INDEX)


def _add_proofs(connection: sqlite3.Connection) -> None:
    # 4 -> 5: the DPoP proofs seen.
    for statement in PROOFS:
        connection.execute(statement)


def _index_by_age(connection: sqlite3.Connection) -> None:
    # 5 -> 6: the purge finds families by age; the expires_at index cost each refresh a page.
    connection.execute("DROP INDEX IF EXISTS auth_refresh_families_expires_at")
    connection.execute(AGE_INDEX)


# MIGRATIONS[n] brings a version n - 1 table to version n.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    2: _seal_tokens,
    3: _add_sessions,
    4: _index_live_families,
    5: _add_proofs,
    6: _index_by_age,
}


def upgrade(connection: sqlite3.Connection) -> None:
    """Create the table, or migrate it to ``SCHEMA_VERSION``; the caller holds a write
    transaction. ``ConfigurationError`` for a file written by a newer release."""
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise ConfigurationError(
            f"the SQLite store's file has schema version {version}, newer than this release's "
            f"{SCHEMA_VERSION}: upgrade auth-refresh, or use another file"
        )
    exists = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'auth_refresh_families'"
    ).fetchone()
    if not exists:
        _create(connection)
    else:
        # What a migration rewrites is overwritten on disk, not left in free pages.
        connection.execute("PRAGMA secure_delete = ON")
        for target in range(max(version, 1) + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[target](connection)
        connection.execute("PRAGMA secure_delete = OFF")
    # PRAGMA takes no parameters; the value is our own integer.
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")


def create_private(path: str) -> None:
    """Create the file readable by its owner only (or make an existing one so)."""
    # Created 0600 before SQLite opens it; SQLite gives -wal and -shm the file's own mode.
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = os.stat(path).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            store_log.warning("SQLite store: %s is readable by others: set to 0600", path)
            os.chmod(path, 0o600)
        return
    os.close(descriptor)


def use_wal(connection: sqlite3.Connection) -> None:
    """Switch the file to WAL: readers do not wait for the writer."""
    # The journal mode is kept in the file: once one connection switches it, it stays.
    try:
        connection.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError as error:
        # Another process switching it at this moment: correct without WAL, only slower, and
        # the next connection tries again.
        store_log.info("SQLite store: journal mode not switched to WAL yet: %s", error)
