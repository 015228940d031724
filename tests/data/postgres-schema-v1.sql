-- The PostgreSQL store's schema version 1 (before sessions), for the migration test.
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
    revoked boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS auth_refresh_families_subject ON auth_refresh_families (subject);
CREATE INDEX IF NOT EXISTS auth_refresh_families_expires_at
    ON auth_refresh_families (expires_at);

-- store.decide_rotation, line for line, under the family's row lock.
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
                consumed_at = p_now,
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

INSERT INTO auth_refresh_schema (version)
    SELECT 1 WHERE NOT EXISTS (SELECT FROM auth_refresh_schema);
