"""The Redis Cluster store's Lua scripts and its key layout's version.

Layout 1 (docs/redis-cluster-store.md): a family's hash under its id's tag, with the session it
is; a subject's set of families under the subject's tag; a session's family under the session
id's tag; the version in ``<prefix>schema``. Each script touches one key: one slot.
"""

from __future__ import annotations

import hashlib

__all__ = [
    "CHECK_LAYOUT",
    "INDEX_FAMILY",
    "LAYOUT_VERSION",
    "REVOKE_FAMILY",
    "REVOKE_SESSION",
    "ROTATE",
    "SESSION_FIELDS",
    "SHAS",
    "START_FAMILY",
]

# The key layout's version, kept in the key ``<prefix>schema``: a newer one is refused.
LAYOUT_VERSION = 1

# KEYS[1]: the layout's version key. Written if no store has yet; the version found.
CHECK_LAYOUT = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"""

# KEYS[1]: the family. A tombstone left by revoke_subject keeps the family revoked.
START_FAMILY = """
redis.call('HSET', KEYS[1], 'subject', ARGV[1], 'created_at', ARGV[2],
    'expires_at', ARGV[3], 'live', ARGV[4], 'sid', ARGV[5])
if ARGV[6] ~= '' then
    redis.call('HSET', KEYS[1], 'ua', ARGV[6])
end
if ARGV[7] ~= '' then
    redis.call('HSET', KEYS[1], 'ip', ARGV[7])
end
redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', math.ceil(tonumber(ARGV[3]) * 1000)))
return 1
"""

# KEYS[1]: the subject's index of families.
INDEX_FAMILY = """
redis.call('SADD', KEYS[1], ARGV[1])
local lifetime_ms = math.ceil(tonumber(ARGV[2]) * 1000)
if redis.call('PTTL', KEYS[1]) < lifetime_ms then
    redis.call('PEXPIRE', KEYS[1], string.format('%.0f', lifetime_ms))
end
return 1
"""

# store.decide_rotation, line for line (as the Redis store's script).
ROTATE = """
local token_id, successor_id, successor_pair = ARGV[1], ARGV[2], ARGV[3]
local successor_expires_at = tonumber(ARGV[4])
local now, grace, lifetime = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local family = redis.call('HMGET', KEYS[1], 'subject', 'created_at', 'expires_at', 'live',
    'previous', 'consumed_at', 'successor', 'revoked')
local subject = family[1]
if not subject then
    return {'unknown'}
end
local deadline = tonumber(family[2]) + lifetime
if now >= deadline or now >= tonumber(family[3]) then
    redis.call('DEL', KEYS[1])
    return {'expired', subject}
end
if family[8] == '1' then
    return {'revoked', subject}
end
if token_id == family[4] then
    local expires_at = math.min(successor_expires_at, deadline)
    redis.call('HSET', KEYS[1], 'expires_at', string.format('%.17g', expires_at),
        'live', successor_id, 'previous', token_id, 'consumed_at', ARGV[5],
        'refreshed_at', ARGV[5])
    if grace > 0 then
        redis.call('HSET', KEYS[1], 'successor', successor_pair)
    else
        redis.call('HDEL', KEYS[1], 'successor')
    end
    redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', math.ceil(expires_at * 1000)))
    return {'rotated', subject}
end
if token_id == family[5] and family[6] and family[7] and now < tonumber(family[6]) + grace then
    return {'grace', subject, family[7]}
end
redis.call('HSET', KEYS[1], 'revoked', '1')
redis.call('HDEL', KEYS[1], 'successor')
return {'reused', subject}
"""

# KEYS[1]: the family. Returns 1 if the family existed.
REVOKE_FAMILY = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('HSET', KEYS[1], 'revoked', '1')
    redis.call('HDEL', KEYS[1], 'successor')
    return 1
end
if ARGV[1] ~= '' then
    redis.call('HSET', KEYS[1], 'revoked', '1')
    redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return 0
"""

# KEYS[1]: the family; ARGV: subject, session id, now. Revokes it if it is that subject's
# live session; 1 if it did.
REVOKE_SESSION = """
local family = redis.call('HMGET', KEYS[1], 'subject', 'sid', 'expires_at', 'revoked')
if family[1] ~= ARGV[1] or family[2] ~= ARGV[2] or family[4] == '1'
        or tonumber(ARGV[3]) >= tonumber(family[3]) then
    return 0
end
redis.call('HSET', KEYS[1], 'revoked', '1')
redis.call('HDEL', KEYS[1], 'successor')
return 1
"""

SHAS = {
    script: hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
    for script in (START_FAMILY, INDEX_FAMILY, ROTATE, REVOKE_FAMILY, REVOKE_SESSION)
}
# What list_sessions and session_active read of a family.
SESSION_FIELDS = (
    "subject",
    "sid",
    "created_at",
    "refreshed_at",
    "expires_at",
    "revoked",
    "ua",
    "ip",
)
