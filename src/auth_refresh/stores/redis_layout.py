"""The Redis store's keys, its Lua scripts, and the layout's version and migrations.

Layout 3, under a prefix (``auth-refresh:``):

* ``family:<id>``: a hash per family, expiring with its live token; ``gen`` is the subject's
  generation when it started; ``sid``, ``refreshed_at``, ``ua`` and ``ip`` describe the session
  it is.
* ``session:<sid>``: the family id of a session, expiring with its family.
* ``families:<subject>``: a sorted set of the subject's families scored by their expiry (ms),
  pruned of expired ones at each login: bounded by the live families.
* ``generation:<subject>``: bumped by ``revoke_subject``; a family of an older generation is
  revoked. One O(1) step however many families a subject has, and a login racing it either
  reads the old generation (and is revoked) or the new one (and started after it).
* ``schema``: the layout's version. Layout 1 (the first releases, no ``schema`` key) kept token
  ids and the grace pair in the clear and a plain set per subject; layout 2 had no sessions;
  ``migrate`` rewrites both.

The scripts name keys they were not given (from a family's subject): a standalone Redis, not
Redis Cluster.
"""

from __future__ import annotations

import json
import math
from typing import cast

import redis.asyncio as redis

from auth_refresh.exceptions import ConfigurationError
from auth_refresh.stores.sealing import seal_pair, session_id_of, token_digest

__all__ = ["LAYOUT_VERSION", "Keys", "migrate"]

LAYOUT_VERSION = 3
SCAN_BATCH = 500

# Numbers go in and out as strings: '%.17g' gives back the exact double that came in.
START_FAMILY = """
local now_ms = math.floor(tonumber(ARGV[2]) * 1000)
local expires_ms = math.ceil(tonumber(ARGV[3]) * 1000)
local lifetime_ms = math.ceil(tonumber(ARGV[6]) * 1000)
redis.call('HSET', KEYS[1], 'subject', ARGV[1], 'created_at', ARGV[2], 'expires_at', ARGV[3],
    'live', ARGV[4], 'gen', redis.call('GET', KEYS[3]) or '0', 'sid', ARGV[7])
if ARGV[8] ~= '' then
    redis.call('HSET', KEYS[1], 'ua', ARGV[8])
end
if ARGV[9] ~= '' then
    redis.call('HSET', KEYS[1], 'ip', ARGV[9])
end
redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', expires_ms))
redis.call('SET', KEYS[4], ARGV[5], 'PXAT', string.format('%.0f', expires_ms))
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.0f', now_ms))
redis.call('ZADD', KEYS[2], string.format('%.0f', expires_ms), ARGV[5])
for i = 2, 3 do
    local ttl = redis.call('PTTL', KEYS[i])
    if ttl ~= -2 and ttl < lifetime_ms then
        redis.call('PEXPIRE', KEYS[i], string.format('%.0f', lifetime_ms))
    end
end
return 1
"""

# store.decide_rotation, line for line, and the subject's generation.
ROTATE = """
local token_id, successor_id, successor_pair = ARGV[1], ARGV[2], ARGV[3]
local successor_expires_at = tonumber(ARGV[4])
local now, grace, lifetime = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local prefix, family_id = ARGV[8], ARGV[9]
local family = redis.call('HMGET', KEYS[1], 'subject', 'created_at', 'expires_at', 'live',
    'previous', 'consumed_at', 'successor', 'revoked', 'gen', 'sid')
local subject = family[1]
if not subject then
    return {'unknown'}
end
local deadline = tonumber(family[2]) + lifetime
if now >= deadline or now >= tonumber(family[3]) then
    redis.call('DEL', KEYS[1])
    redis.call('ZREM', prefix .. 'families:' .. subject, family_id)
    return {'expired', subject}
end
if family[8] == '1' then
    return {'revoked', subject}
end
local generation = redis.call('GET', prefix .. 'generation:' .. subject)
if generation and tonumber(generation) > tonumber(family[9] or '0') then
    redis.call('HSET', KEYS[1], 'revoked', '1')
    redis.call('HDEL', KEYS[1], 'successor')
    return {'revoked', subject}
end
if token_id == family[4] then
    local expires_at = math.min(successor_expires_at, deadline)
    local expires_ms = string.format('%.0f', math.ceil(expires_at * 1000))
    redis.call('HSET', KEYS[1], 'expires_at', string.format('%.17g', expires_at),
        'live', successor_id, 'previous', token_id, 'consumed_at', ARGV[5],
        'refreshed_at', ARGV[5])
    if grace > 0 then
        redis.call('HSET', KEYS[1], 'successor', successor_pair)
    else
        redis.call('HDEL', KEYS[1], 'successor')
    end
    redis.call('PEXPIREAT', KEYS[1], expires_ms)
    if family[10] then
        redis.call('PEXPIREAT', prefix .. 'session:' .. family[10], expires_ms)
    end
    redis.call('ZADD', prefix .. 'families:' .. subject, 'XX', expires_ms, family_id)
    -- The caller holds the successor pair already: it is not sent back.
    return {'rotated', subject}
end
if token_id == family[5] and family[6] and family[7] and now < tonumber(family[6]) + grace then
    return {'grace', subject, family[7]}
end
redis.call('HSET', KEYS[1], 'revoked', '1')
redis.call('HDEL', KEYS[1], 'successor')
return {'reused', subject}
"""

REVOKE_FAMILY = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('HSET', KEYS[1], 'revoked', '1')
    redis.call('HDEL', KEYS[1], 'successor')
end
return 1
"""

# No families, nothing to revoke (and no generation key left behind without an expiry).
REVOKE_SUBJECT = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then
    return 0
end
redis.call('INCR', KEYS[2])
if ttl > 0 then
    redis.call('PEXPIRE', KEYS[2], ttl)
end
return 1
"""

# The family of a session, if it is live: known, not revoked (itself or by generation), not
# expired. KEYS[1] is the session key; ARGV: now, prefix.
LIVE_FAMILY = """
local function live_family(session_key, now, prefix)
    local family_id = redis.call('GET', session_key)
    if not family_id then
        return nil
    end
    local key = prefix .. 'family:' .. family_id
    local family = redis.call('HMGET', key, 'subject', 'expires_at', 'revoked', 'gen')
    if not family[1] or family[3] == '1' or now >= tonumber(family[2]) then
        return nil
    end
    local generation = redis.call('GET', prefix .. 'generation:' .. family[1])
    if generation and tonumber(generation) > tonumber(family[4] or '0') then
        return nil
    end
    return key, family[1]
end
"""

SESSION_ACTIVE = (
    LIVE_FAMILY
    + """
if live_family(KEYS[1], tonumber(ARGV[1]), ARGV[2]) then
    return 1
end
return 0
"""
)

# KEYS[1]: the session key; ARGV: now, prefix, subject.
REVOKE_SESSION = (
    LIVE_FAMILY
    + """
local key, subject = live_family(KEYS[1], tonumber(ARGV[1]), ARGV[2])
if not key or subject ~= ARGV[3] then
    return 0
end
redis.call('HSET', key, 'revoked', '1')
redis.call('HDEL', key, 'successor')
return 1
"""
)

# KEYS: the subject's families and generation; ARGV: now, prefix. Per live session: sid,
# created_at, refreshed_at, ua, ip ('' for none).
LIST_SESSIONS = """
local now, prefix = tonumber(ARGV[1]), ARGV[2]
local generation = tonumber(redis.call('GET', KEYS[2]) or '0')
local found = {}
for _, family_id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%.0f',
        now * 1000), '+inf')) do
    local f = redis.call('HMGET', prefix .. 'family:' .. family_id, 'sid', 'created_at',
        'refreshed_at', 'ua', 'ip', 'expires_at', 'revoked', 'gen')
    if f[1] and f[7] ~= '1' and now < tonumber(f[6]) and tonumber(f[8] or '0') >= generation then
        table.insert(found, {f[1], f[2], f[3] or '', f[4] or '', f[5] or ''})
    end
end
return found
"""

# Layout 2 -> 3 for one family, unless it has a session already. ARGV: sid, family id.
ADD_SESSION = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 or redis.call('HEXISTS', KEYS[1], 'sid') == 1 then
    return 0
end
redis.call('HSET', KEYS[1], 'sid', ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ttl)
return 1
"""

# Layout 1 -> 2 for one family, only if no one rewrote it meanwhile (another process migrating).
MIGRATE_FAMILY = """
if redis.call('HGET', KEYS[1], 'live') ~= ARGV[1] or redis.call('HEXISTS', KEYS[1], 'gen') == 1 then
    return 0
end
redis.call('HSET', KEYS[1], 'live', ARGV[2], 'gen', '0')
if ARGV[3] ~= '' then
    redis.call('HSET', KEYS[1], 'previous', ARGV[3])
end
if ARGV[4] ~= '' then
    redis.call('HSET', KEYS[1], 'successor', ARGV[4])
else
    redis.call('HDEL', KEYS[1], 'successor')
end
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[6])
local ttl = redis.call('PTTL', KEYS[3])
if ttl > 0 and redis.call('PTTL', KEYS[2]) < ttl then
    redis.call('PEXPIRE', KEYS[2], ttl)
end
return 1
"""


class Keys:
    """The key names under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.schema = prefix + "schema"

    def family(self, family_id: str) -> str:
        return self.prefix + "family:" + family_id

    def families(self, subject: str) -> str:
        return self.prefix + "families:" + subject

    def generation(self, subject: str) -> str:
        return self.prefix + "generation:" + subject

    def session(self, session_id: str) -> str:
        return self.prefix + "session:" + session_id


async def migrate(client: redis.Redis, keys: Keys) -> None:
    """Bring the layout to ``LAYOUT_VERSION``; ``ConfigurationError`` for a newer one."""
    version = await client.get(keys.schema)
    if version is not None and int(version) == LAYOUT_VERSION:
        return
    if version is not None and int(version) > LAYOUT_VERSION:
        raise ConfigurationError(
            f"the Redis store's data has layout version {int(version)}, newer than this "
            f"release's {LAYOUT_VERSION}: upgrade auth-refresh, or use another key prefix"
        )
    # Version 1 had no schema key; a fresh database has nothing to migrate either.
    migrate_family = client.register_script(MIGRATE_FAMILY)
    async for key in client.scan_iter(match=keys.prefix + "family:*", count=SCAN_BATCH):
        fields = cast(dict[str, str], await client.hgetall(key))
        if "gen" in fields or "live" not in fields:
            continue
        await migrate_family(
            keys=[
                key,
                keys.families(fields["subject"]),
                keys.prefix + "subject:" + fields["subject"],
            ],
            args=_migrated(key.removeprefix(keys.prefix + "family:"), fields),
        )
    async for key in client.scan_iter(match=keys.prefix + "subject:*", count=SCAN_BATCH):
        await client.unlink(key)
    add_session = client.register_script(ADD_SESSION)
    family_prefix = keys.prefix + "family:"
    async for key in client.scan_iter(match=family_prefix + "*", count=SCAN_BATCH):
        family_id = key.removeprefix(family_prefix)
        session_id = session_id_of(family_id)
        await add_session(keys=[key, keys.session(session_id)], args=[session_id, family_id])
    # Over layout 2's version, once every family has its session.
    await client.set(keys.schema, LAYOUT_VERSION)


def _migrated(family_id: str, fields: dict[str, str]) -> list[str]:
    previous = fields.get("previous")
    sealed = ""
    if previous is not None and fields.get("successor") is not None:
        sealed = json.dumps(seal_pair(json.loads(fields["successor"]), previous, family_id))
    expires_ms = str(math.ceil(float(fields["expires_at"]) * 1000))
    return [
        fields["live"],
        token_digest(fields["live"]),
        token_digest(previous) if previous is not None else "",
        sealed,
        expires_ms,
        family_id,
    ]
