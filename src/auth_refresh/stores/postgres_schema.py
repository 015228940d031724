"""The PostgreSQL store's SQL: the schema (version 3), its migrations, and each step's statement.

Version 1 kept the families; version 2 adds the session each family is (``session_id``, unique
and indexed, ``refreshed_at``, ``user_agent``, ``client_ip``); version 3 adds
``auth_refresh_rotate_batch``, several rotations in one statement. ``MIGRATIONS[n]`` brings a
version n - 1 schema to version n; adding one means writing it and raising ``SCHEMA_VERSION``.
docs/postgres-store.md gives the same DDL and migration for teams that manage the schema.
"""

from __future__ import annotations

__all__ = [
    "LIST_SESSIONS",
    "MIGRATIONS",
    "REVOKE_FAMILY",
    "REVOKE_SESSION",
    "REVOKE_SUBJECT",
    "ROTATE_BATCH",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SESSION_ACTIVE",
    "START_FAMILY",
]

SCHEMA_VERSION = 3

# The rotation, store.decide_rotation line for line under the family's row lock; a rotation
# is the session's last refresh. Version 2's; MIGRATIONS[2] installs it over version 1's.
ROTATE_FUNCTION = """
CREATE OR REPLACE FUNCTION auth_refresh_rotate(
    p_family_id text, p_token_id text, p_successor_id text, p_successor_pair text,
    p_successor_expires_at double precision, p_now double precision,
    p_grace double precision, p_lifetime double precision,
    OUT outcome text, OUT family_subject text, OUT grace_pair text)
LANGUAGE plpgsql AS $$
DECLARE
    family auth_refresh_families%ROWTYPE;
    deadline double precision;
BEGIN
    SELECT * INTO family FROM auth_refresh_families WHERE family_id = p_family_id FOR UPDATE;
    IF NOT FOUND THEN
        outcome := 'unknown';
        RETURN;
    END IF;
    family_subject := family.subject;
    deadline := family.created_at + p_lifetime;
    IF p_now >= deadline OR p_now >= family.expires_at THEN
        DELETE FROM auth_refresh_families WHERE family_id = p_family_id;
        outcome := 'expired';
        RETURN;
    END IF;
    IF family.revoked THEN
        outcome := 'revoked';
        RETURN;
    END IF;
    IF p_token_id = family.live_token_id THEN
        UPDATE auth_refresh_families
            SET expires_at = least(p_successor_expires_at, deadline),
                live_token_id = p_successor_id, previous_token_id = p_token_id,
                consumed_at = p_now, refreshed_at = p_now,
                successor_pair = CASE WHEN p_grace > 0 THEN p_successor_pair END
            WHERE family_id = p_family_id;
        outcome := 'rotated';
        RETURN;
    END IF;
    IF p_token_id = family.previous_token_id AND family.consumed_at IS NOT NULL
            AND family.successor_pair IS NOT NULL AND p_now < family.consumed_at + p_grace THEN
        outcome := 'grace';
        grace_pair := family.successor_pair;
        RETURN;
    END IF;
    UPDATE auth_refresh_families SET revoked = true, successor_pair = NULL
        WHERE family_id = p_family_id;
    outcome := 'reused';
END
$$;
"""

# Several rotations in one statement (one transaction): each is auth_refresh_rotate, taken in
# family id order, so two batches lock their rows in the same order and never deadlock; one
# family's repeats keep their order (the sort is stable by position) and each sees the one
# before it. A row per element, with its 1-based position. Version 3's (MIGRATIONS[3]).
ROTATE_BATCH_FUNCTION = """
CREATE OR REPLACE FUNCTION auth_refresh_rotate_batch(
    p_family_ids text[], p_token_ids text[], p_successor_ids text[], p_successor_pairs text[],
    p_successor_expires_at double precision[], p_now double precision[],
    p_grace double precision[], p_lifetime double precision[])
RETURNS TABLE (ordinal integer, outcome text, family_subject text, grace_pair text)
LANGUAGE plpgsql AS $$
DECLARE
    i integer;
    n integer := cardinality(p_family_ids);
BEGIN
    IF n IS DISTINCT FROM cardinality(p_token_ids)
            OR n IS DISTINCT FROM cardinality(p_successor_ids)
            OR n IS DISTINCT FROM cardinality(p_successor_pairs)
            OR n IS DISTINCT FROM cardinality(p_successor_expires_at)
            OR n IS DISTINCT FROM cardinality(p_now)
            OR n IS DISTINCT FROM cardinality(p_grace)
            OR n IS DISTINCT FROM cardinality(p_lifetime) THEN
        RAISE EXCEPTION 'auth_refresh_rotate_batch: arrays of different lengths';
    END IF;
    FOR i IN SELECT element.position::integer
            FROM unnest(p_family_ids) WITH ORDINALITY AS element(family_id, position)
            ORDER BY element.family_id COLLATE "C", element.position LOOP
        ordinal := i;
        SELECT rotation.outcome, rotation.family_subject, rotation.grace_pair
            INTO outcome, family_subject, grace_pair
            FROM auth_refresh_rotate(p_family_ids[i], p_token_ids[i], p_successor_ids[i],
                p_successor_pairs[i], p_successor_expires_at[i], p_now[i], p_grace[i],
                p_lifetime[i]) AS rotation;
        RETURN NEXT;
    END LOOP;
END
$$;
"""

# Schema version 3. docs/postgres-store.md gives the same DDL for teams that manage the schema.
TABLES = """
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
);
CREATE INDEX IF NOT EXISTS auth_refresh_families_subject ON auth_refresh_families (subject);
CREATE INDEX IF NOT EXISTS auth_refresh_families_expires_at
    ON auth_refresh_families (expires_at);
CREATE UNIQUE INDEX IF NOT EXISTS auth_refresh_families_session
    ON auth_refresh_families (session_id);
"""
SCHEMA = "\n".join(
    (
        TABLES,
        ROTATE_FUNCTION,
        ROTATE_BATCH_FUNCTION,
        "INSERT INTO auth_refresh_schema (version)"
        " SELECT 3 WHERE NOT EXISTS (SELECT FROM auth_refresh_schema);",
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
}

# Expired families (tombstones included) are purged a batch at a time by logins.
START_FAMILY = """
WITH purged AS (
    DELETE FROM auth_refresh_families WHERE family_id IN (
        SELECT family_id FROM auth_refresh_families WHERE expires_at <= $3
        LIMIT $7 FOR UPDATE SKIP LOCKED)
)
INSERT INTO auth_refresh_families (family_id, subject, created_at, expires_at, live_token_id,
        session_id, user_agent, client_ip)
    VALUES ($1, $2, $3, least($4, $3 + $5), $6, $8, $9, $10)
ON CONFLICT (family_id) DO UPDATE SET subject = excluded.subject,
    created_at = excluded.created_at, expires_at = excluded.expires_at,
    live_token_id = excluded.live_token_id, previous_token_id = NULL, consumed_at = NULL,
    successor_pair = NULL, revoked = false, session_id = excluded.session_id,
    refreshed_at = NULL, user_agent = excluded.user_agent, client_ip = excluded.client_ip
"""
ROTATE_BATCH = (
    "SELECT ordinal, outcome, family_subject, grace_pair "
    "FROM auth_refresh_rotate_batch($1, $2, $3, $4, $5, $6, $7, $8)"
)
REVOKE_FAMILY = (
    "UPDATE auth_refresh_families SET revoked = true, successor_pair = NULL WHERE family_id = $1"
)
# A live session: not revoked, not expired.
SESSION_ACTIVE = (
    "SELECT EXISTS (SELECT FROM auth_refresh_families "
    "WHERE session_id = $1 AND NOT revoked AND expires_at > $2)"
)
LIST_SESSIONS = (
    "SELECT session_id, created_at, coalesce(refreshed_at, created_at) AS last_refreshed_at, "
    "user_agent, client_ip FROM auth_refresh_families "
    "WHERE subject = $1 AND NOT revoked AND expires_at > $2 ORDER BY created_at DESC"
)
REVOKE_SESSION = (
    "UPDATE auth_refresh_families SET revoked = true, successor_pair = NULL "
    "WHERE session_id = $1 AND subject = $2 AND NOT revoked AND expires_at > $3"
)
# Rows in the order a batch takes its families' (ROTATE_BATCH_FUNCTION): a rotation batch and
# a logout-everywhere lock several rows each, and would deadlock if they took them crosswise.
REVOKE_SUBJECT = """
UPDATE auth_refresh_families SET revoked = true, successor_pair = NULL WHERE family_id IN (
    SELECT family_id FROM auth_refresh_families WHERE subject = $1 AND NOT revoked
    ORDER BY family_id COLLATE "C" FOR UPDATE)
"""
