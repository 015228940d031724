"""The PostgreSQL store's PL/pgSQL functions, as the DDL that creates them: the rotation, its
batches (``auth_refresh_rotate_batch``, without and with a deadline) and the login with a
deadline (``auth_refresh_start_family_before``), with the statement that login runs.
``postgres_schema`` puts them in the schema and its migrations; docs/postgres-store.md gives the
same DDL.

A function with a deadline (seconds since the epoch as the server's clock reads them) writes
nothing once that clock has passed it: checked first (nothing is locked in vain) and again after
the writes, just before the statement's transaction commits. So a step that waited in a frozen
server's socket, or ran late, never takes effect after its caller was answered 503.
"""

from __future__ import annotations

import textwrap

__all__ = [
    "ROTATE_BATCH_FUNCTION",
    "ROTATE_BEFORE_FUNCTION",
    "ROTATE_FUNCTION",
    "START_FAMILY",
    "START_FAMILY_BEFORE_FUNCTION",
]


def _past_deadline(function: str) -> str:
    # What a function with a deadline checks first and again after its writes.
    return f"""    IF extract(epoch FROM clock_timestamp()) > p_deadline THEN
        RAISE EXCEPTION '{function}: past its deadline, nothing written'
            USING ERRCODE = 'query_canceled';
    END IF;"""


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

# The batch with a deadline: seconds since the epoch as the server's clock reads them, by when
# the statement must commit (its callers give up soon after). Past it, the batch raises and writes
# nothing: a batch that waited in a frozen server's socket, or ran late, never takes effect after
# its callers were answered 503. Checked first (no row is locked in vain) and again after the
# writes, just before the statement's transaction commits. Version 5's (MIGRATIONS[5]).
ROTATE_BEFORE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION auth_refresh_rotate_batch(
    p_family_ids text[], p_token_ids text[], p_successor_ids text[], p_successor_pairs text[],
    p_successor_expires_at double precision[], p_now double precision[],
    p_grace double precision[], p_lifetime double precision[], p_deadline double precision)
RETURNS TABLE (ordinal integer, outcome text, family_subject text, grace_pair text)
LANGUAGE plpgsql AS $$
BEGIN
{_past_deadline("auth_refresh_rotate_batch")}
    RETURN QUERY SELECT * FROM auth_refresh_rotate_batch(p_family_ids, p_token_ids,
        p_successor_ids, p_successor_pairs, p_successor_expires_at, p_now, p_grace, p_lifetime);
{_past_deadline("auth_refresh_rotate_batch")}
END
$$;
"""  # noqa: S608 - constant text, no input

# A login purges a batch of the families past the absolute lifetime (tombstones included), found
# by age: created_at, which no refresh moves (an index of expires_at, which every refresh moves,
# kept rotations from being HOT updates). A family idle past its expiry goes then, or at its
# subject's next login, when the subject's expired ones leave the live families' index. Keeping
# it meanwhile changes nothing: every rotation refuses a family past created_at + lifetime (the
# current setting, whatever its stored expires_at) or past its expiry, whose tokens are expired.
# Beyond the cap, the subject's live families but the new one and the most recently refreshed
# ($11 = max_sessions - 1) others are revoked, their rows locked in family id order as a
# rotation batch locks them. $3 is the login's now, $5 the absolute lifetime (cast: the
# statement prepared alone, as tests do, needs their type; the function's are typed already).
START_FAMILY = """
WITH purged AS (
    DELETE FROM auth_refresh_families WHERE family_id IN (
        SELECT family_id FROM auth_refresh_families
        WHERE created_at <= $3 - $5::double precision LIMIT $7 FOR UPDATE SKIP LOCKED)
), subject_expired AS (
    DELETE FROM auth_refresh_families WHERE family_id IN (
        SELECT family_id FROM auth_refresh_families
        WHERE subject = $2 AND NOT revoked AND expires_at <= $3 FOR UPDATE SKIP LOCKED)
), beyond_cap AS (
    UPDATE auth_refresh_families SET revoked = true, successor_pair = NULL
    WHERE NOT revoked AND family_id IN (
        SELECT family_id FROM auth_refresh_families WHERE family_id IN (
            SELECT family_id FROM auth_refresh_families
            WHERE subject = $2 AND NOT revoked AND expires_at > $3 AND family_id <> $1
            ORDER BY coalesce(refreshed_at, created_at) DESC, created_at DESC,
                session_id COLLATE "C" DESC
            OFFSET $11)
        ORDER BY family_id COLLATE "C" FOR UPDATE)
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

# The login with a deadline: one statement, so one transaction, as the store calls it. Two logins
# of one subject take turns (a transaction-long lock, before the statement that counts the
# subject's sessions): otherwise neither would see the other's new family. A VOLATILE function's
# statements each take a new snapshot, so START_FAMILY, run after the lock, sees the families of
# the login that held it. START_FAMILY's $1 to $11 are this function's arguments, in order.
# Version 6's (MIGRATIONS[6]); version 7's installs it again, with the purge by age.
START_FAMILY_BEFORE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION auth_refresh_start_family_before(
    p_family_id text, p_subject text, p_now double precision,
    p_token_expires_at double precision, p_lifetime double precision, p_token_id text,
    p_purge_batch integer, p_session_id text, p_user_agent text, p_client_ip text,
    p_others_kept integer, p_deadline double precision)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
{_past_deadline("auth_refresh_start_family_before")}
    PERFORM pg_advisory_xact_lock(hashtext('auth_refresh_subject:' || p_subject));
{textwrap.indent(START_FAMILY.strip(), "    ")};
{_past_deadline("auth_refresh_start_family_before")}
END
$$;
"""
