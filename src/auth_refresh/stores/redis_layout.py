"""The Redis store's key layout: its keys, the Lua functions the shared scripts
(``redis_scripts``) call over them, ``revoke_subject``'s script, the version and migrations.

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

The scripts name keys they were not given (from a family's subject or session): a standalone
Redis, not Redis Cluster.
"""

from __future__ import annotations

import json
import math
from typing import cast

import redis.asyncio as redis

from auth_refresh.stores.redis_core import newer_layout
from auth_refresh.stores.redis_scripts import lua_string
from auth_refresh.stores.sealing import seal_pair, session_id_of, token_digest

__all__ = ["LAYOUT_VERSION", "REVOKE_SUBJECT", "Keys", "migrate"]

LAYOUT_VERSION = 3
SCAN_BATCH = 500

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


# The functions the shared scripts call (redis_scripts), after ``local prefix = ...``.
HOOKS = """
local function family_key(family_id) return prefix .. 'family:' .. family_id end
local function index_key(subject) return prefix .. 'families:' .. subject end
local function generation_key(subject) return prefix .. 'generation:' .. subject end
local function session_key(session_id) return prefix .. 'session:' .. session_id end
local function outdated(subject, gen)
    local generation = redis.call('GET', generation_key(subject))
    return generation and tonumber(generation) > tonumber(gen or '0')
end
local function forget(subject, family_id)
    redis.call('ZREM', index_key(subject), family_id)
end
local function extend(subject, family_id, sid, expires_ms)
    if sid then
        redis.call('PEXPIREAT', session_key(sid), expires_ms)
    end
    redis.call('ZADD', index_key(subject), 'XX', expires_ms, family_id)
end
-- The index is pruned of expired families at each login, so bounded by the live ones; it and
-- the generation outlive every family of the subject.
local function started(subject, family_id, sid, now, expires_ms, lifetime)
    redis.call('HSET', KEYS[1], 'gen', redis.call('GET', generation_key(subject)) or '0')
    redis.call('SET', session_key(sid), family_id, 'PXAT', expires_ms)
    local index = index_key(subject)
    redis.call('ZREMRANGEBYSCORE', index, '-inf', string.format('%.0f', math.floor(now * 1000)))
    redis.call('ZADD', index, expires_ms, family_id)
    local lifetime_ms = math.ceil(lifetime * 1000)
    for _, key in ipairs({index, generation_key(subject)}) do
        local ttl = redis.call('PTTL', key)
        if ttl ~= -2 and ttl < lifetime_ms then
            redis.call('PEXPIRE', key, string.format('%.0f', lifetime_ms))
        end
    end
end
local function family_of(key)
    local family_id = redis.call('GET', key)
    return family_id and family_key(family_id)
end
local function families_of(index, now)
    local keys = {}
    for _, family_id in ipairs(redis.call('ZRANGEBYSCORE', index,
            '(' .. string.format('%.0f', now * 1000), '+inf')) do
        table.insert(keys, family_key(family_id))
    end
    return keys
end
"""


class Keys:
    """The key names under one prefix, and the scripts' functions over them."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.schema = prefix + "schema"
        self.lua = "local prefix = " + lua_string(prefix) + "\n" + HOOKS

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
        raise newer_layout("Redis store", int(version), LAYOUT_VERSION, "another key prefix")
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
