"""The PostgreSQL store's SQL: the schema (version 7), its migrations, and each step's statement;
and the check of a database's schema, which creates or migrates it.

Version 1 kept the families; version 2 adds the session each family is (``session_id``, unique
and indexed, ``refreshed_at``, ``user_agent``, ``client_ip``); version 3 adds
``auth_refresh_rotate_batch``, several rotations in one statement; version 4 indexes the live
(not revoked) families only, by subject in list order, in place of the index of every family by
subject; version 5 adds the DPoP proofs seen (``auth_refresh_proofs``) and the batch with a
deadline (``ROTATE_BEFORE_FUNCTION``), which writes nothing once the server's clock has passed
it; version 6 adds the login with a deadline (``START_FAMILY_BEFORE_FUNCTION``), likewise;
version 7 indexes families by ``created_at`` in place of ``expires_at`` (a login purges those
past the absolute lifetime by age) and fills the table's pages to 70% (``fillfactor``), so that
a rotation, which changes no indexed column, can be a HOT update. The functions' DDL is in
``postgres_functions``. ``MIGRATIONS[n]`` brings a version n - 1 schema to version n; adding one
means writing it and raising ``SCHEMA_VERSION``.
docs/postgres-store.md gives the same DDL and migrations for teams that manage the schema.
"""

from __future__ import annotations

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from auth_refresh.exceptions import ConfigurationError
from auth_refresh.stores.postgres_functions import (
    ROTATE_BATCH_FUNCTION,
    ROTATE_BEFORE_FUNCTION,
    ROTATE_FUNCTION,
    START_FAMILY_BEFORE_FUNCTION,
)

__all__ = [
    "FIRST_USE_PROOF",
    "LIST_SESSIONS",
    "LIST_SESSIONS_AFTER",
    "MIGRATIONS",
    "REVOKE_FAMILY",
    "REVOKE_OTHERS",
    "REVOKE_SESSION",
    "REVOKE_SUBJECT",
    "ROTATE_BATCH",
    "SCHEMA",
    "SCHEMA_TABLE",
    "SCHEMA_VERSION",
    "SESSION_ACTIVE",
    "START_FAMILY_BEFORE",
    "check_schema",
]

SCHEMA_VERSION = 7
# Creating the schema, once: DDL syncs to disk, and may wait for another process creating it.
SCHEMA_TIMEOUT_MS = 30_000

# A subject's live families in list order (newest first; session ids compared as Python and
# SQLite compare them): the list, the cap and the revocations walk these, never the subject's
# revoked families, kept until they expire. Version 4's (MIGRATIONS[4]).
LIVE_INDEX = """
CREATE INDEX IF NOT EXISTS auth_refresh_families_live ON auth_refresh_families
    (subject, created_at DESC, session_id COLLATE "C" DESC) WHERE NOT revoked;
"""

# The DPoP proofs seen (ProofReplayCache), each until its window ends. Version 5's.
PROOFS_TABLE = """
CREATE TABLE IF NOT EXISTS auth_refresh_proofs (
    key text PRIMARY KEY,
    expires_at double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS auth_refresh_proofs_expires_at ON auth_refresh_proofs (expires_at);
"""

# Families by age, for the login's purge of those past the absolute lifetime. Not by expires_at:
# every rotation moves that, and an index of it kept every rotation from being a HOT update (a
# new entry in each index per refresh). Version 7's (MIGRATIONS[7]).
AGE_INDEX = """
CREATE INDEX IF NOT EXISTS auth_refresh_families_created_at ON auth_refresh_families (created_at);
"""

# Schema version 7. docs/postgres-store.md gives the same DDL for teams that manage the schema.
# fillfactor 70 leaves room on each page for a rotation's new row version (a HOT update).
TABLES = f"""
CREATE TABLE IF NOT EXISTS auth_refresh_schema (version integer NOT NULL);

CREATE TABLE IF NOT EXISTS auth_refresh_families (
    family_id text PRIMARY KEY,
    subject text NOT NULL,
    created_at double precision NOT NULL,
    expires_at double precision NOT NULL,
    live_token_id text NOT NULL,
    previous_token_id text,
    consumed_at double precision,
    successor_pair text,
    revoked boolean NOT NULL DEFAULT false,
    session_id text NOT NULL,
    refreshed_at double precision,
    user_agent text,
    client_ip text
) WITH (fillfactor = 70);
{AGE_INDEX.strip()}
CREATE UNIQUE INDEX IF NOT EXISTS auth_refresh_families_session
    ON auth_refresh_families (session_id);
"""
SCHEMA = "\n".join(
    (
        TABLES,
        LIVE_INDEX,
        PROOFS_TABLE,
        ROTATE_FUNCTION,
        ROTATE_BATCH_FUNCTION,
        ROTATE_BEFORE_FUNCTION,
        START_FAMILY_BEFORE_FUNCTION,
        # Our own integer.
        "INSERT INTO auth_refresh_schema (version)"  # noqa: S608
        f" SELECT {SCHEMA_VERSION:d} WHERE NOT EXISTS (SELECT FROM auth_refresh_schema);",
    )
)

# The statements that bring a schema of version N - 1 to version N, by N.
MIGRATIONS: dict[int, str] = {
    # 1 -> 2: every family is a session; those started before get sealing.session_id_of's id
    # (computed here in SQL) and no client label.
    2: "\n".join(
        (
            """
ALTER TABLE auth_refresh_families ADD COLUMN session_id text,
    ADD COLUMN refreshed_at double precision, ADD COLUMN user_agent text,
    ADD COLUMN client_ip text;
UPDATE auth_refresh_families SET session_id = rtrim(translate(encode(sha256(
    convert_to('auth-refresh session id', 'UTF8') || '\\x00'::bytea
    || convert_to(family_id, 'UTF8')), 'base64'), '+/', '-_'), '=');
ALTER TABLE auth_refresh_families ALTER COLUMN session_id SET NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS auth_refresh_families_session
    ON auth_refresh_families (session_id);
""",
            ROTATE_FUNCTION,
        )
    ),
    # 2 -> 3: the batch function (the single rotation's stays: the batch calls it).
    3: ROTATE_BATCH_FUNCTION,
    # 3 -> 4: the index of every family by subject gives way to the live families' index.
    4: "DROP INDEX IF EXISTS auth_refresh_families_subject;" + LIVE_INDEX,
    # 4 -> 5: the DPoP proofs seen; the batch with a deadline (the one without stays, for
    # processes still using it).
    5: PROOFS_TABLE + ROTATE_BEFORE_FUNCTION,
    # 5 -> 6: the login with a deadline (the release before logs in without it: nothing to keep).
    6: START_FAMILY_BEFORE_FUNCTION,
    # 6 -> 7: the purge by age, so that rotations can be HOT updates; the login function again,
    # with that purge. Building the index on a large table takes a while (and blocks writes to
    # it): run `auth-refresh store migrate` before the release serves, as for version 4.
    7: "\n".join(
        (
            "DROP INDEX IF EXISTS auth_refresh_families_expires_at;",
            AGE_INDEX,
            "ALTER TABLE auth_refresh_families SET (fillfactor = 70);",
            START_FAMILY_BEFORE_FUNCTION,
        )
    ),
}

# A login: auth_refresh_start_family_before's arguments, the last its deadline.
START_FAMILY_BEFORE = (
    "SELECT auth_refresh_start_family_before($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
)
ROTATE_BATCH = (
    "SELECT ordinal, outcome, family_subject, grace_pair "
    "FROM auth_refresh_rotate_batch($1, $2, $3, $4, $5, $6, $7, $8, $9)"
)
REVOKE_FAMILY = (
    "UPDATE auth_refresh_families SET revoked = true, successor_pair = NULL WHERE family_id = $1"
)
# A live session: not revoked, not expired. "NOT revoked" as the live families' index has it:
# a statement of a subject's sessions walks that index only.
SESSION_ACTIVE = (
    "SELECT EXISTS (SELECT FROM auth_refresh_families "
    "WHERE session_id = $1 AND NOT revoked AND expires_at > $2)"
)
_SESSIONS = (
    "SELECT session_id, created_at, coalesce(refreshed_at, created_at) AS last_refreshed_at, "
    "user_agent, client_ip FROM auth_refresh_families "
    "WHERE subject = $1 AND NOT revoked AND expires_at > $2 "
)
_IN_LIST_ORDER = """ORDER BY created_at DESC, session_id COLLATE "C" DESC LIMIT $3"""
LIST_SESSIONS = _SESSIONS + _IN_LIST_ORDER
# The page after a cursor: keyset, so it starts where the index does, whatever came before;
# the cursor's created_at is the double precision this table answered with, compared exactly.
LIST_SESSIONS_AFTER = (
    _SESSIONS + """AND (created_at, session_id COLLATE "C") < ($4, $5) """ + _IN_LIST_ORDER
)
REVOKE_SESSION = (
    "UPDATE auth_refresh_families SET revoked = true, successor_pair = NULL "
    "WHERE session_id = $1 AND subject = $2 AND NOT revoked AND expires_at > $3"
)
# Rows in the order a batch takes its families' (ROTATE_BATCH_FUNCTION): a rotation batch and
# a logout-everywhere lock several rows each, and would deadlock if they took them crosswise.
# Every family of the subject still in the index (an expired one too); how many were live.
REVOKE_SUBJECT = """
WITH revoked AS (
    UPDATE auth_refresh_families SET revoked = true, successor_pair = NULL
    WHERE NOT revoked AND family_id IN (
        SELECT family_id FROM auth_refresh_families WHERE subject = $1 AND NOT revoked
        ORDER BY family_id COLLATE "C" FOR UPDATE)
    RETURNING expires_at > $2 AS live
)
SELECT count(*) FILTER (WHERE live) FROM revoked
"""
# The subject's live sessions but one (or none: $3 NULL), as REVOKE_SUBJECT locks them.
REVOKE_OTHERS = """
WITH revoked AS (
    UPDATE auth_refresh_families SET revoked = true, successor_pair = NULL
    WHERE NOT revoked AND family_id IN (
        SELECT family_id FROM auth_refresh_families
        WHERE subject = $1 AND NOT revoked AND expires_at > $2
            AND session_id IS DISTINCT FROM $3
        ORDER BY family_id COLLATE "C" FOR UPDATE)
    RETURNING 1
)
SELECT count(*) FROM revoked
"""

# A key recorded and unexpired is a replay: no row. Each purges a batch of expired keys, never
# the one being recorded.
FIRST_USE_PROOF = """
WITH purged AS (
    DELETE FROM auth_refresh_proofs WHERE key IN (
        SELECT key FROM auth_refresh_proofs WHERE expires_at <= $3 AND key <> $1
        LIMIT 100 FOR UPDATE SKIP LOCKED)
)
INSERT INTO auth_refresh_proofs (key, expires_at) VALUES ($1, $2)
ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at
    WHERE auth_refresh_proofs.expires_at <= $3
RETURNING 1
"""


# The schema's version table, or NULL where there is none (in the search path).
SCHEMA_TABLE = "SELECT to_regclass('auth_refresh_schema')"


async def check_schema(connection: PoolConnectionProxy[asyncpg.Record], *, create: bool) -> None:
    """Create the schema (``create``) or migrate it to ``SCHEMA_VERSION``, in one transaction;
    ``ConfigurationError`` for a schema this release cannot use."""
    async with connection.transaction():
        await connection.execute(f"SET LOCAL statement_timeout = {SCHEMA_TIMEOUT_MS}")
        # One process creates the tables; the others wait for it, then find them.
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext('auth_refresh_schema'))")
        exists = await connection.fetchval(SCHEMA_TABLE)
        if exists is None:
            if not create:
                raise ConfigurationError(
                    "auth_refresh_schema=managed, but the table auth_refresh_schema does not "
                    "exist: apply the DDL of docs/postgres-store.md"
                )
            await connection.execute(SCHEMA)
        version = await connection.fetchval("SELECT max(version) FROM auth_refresh_schema")
        if version is None:
            raise ConfigurationError(
                "the table auth_refresh_schema holds no version: apply the DDL of "
                "docs/postgres-store.md whole"
            )
        if version > SCHEMA_VERSION:
            raise ConfigurationError(
                f"the PostgreSQL store's database has schema version {version}, newer than "
                f"this release's {SCHEMA_VERSION}: upgrade auth-refresh, or use another "
                "database"
            )
        if version < SCHEMA_VERSION:
            if not create:
                raise ConfigurationError(
                    f"auth_refresh_schema=managed, but the schema is version {version}: "
                    f"apply the migrations to version {SCHEMA_VERSION} of "
                    "docs/postgres-store.md"
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                await connection.execute(MIGRATIONS[target])
            await connection.execute("UPDATE auth_refresh_schema SET version = $1", SCHEMA_VERSION)
