"""The Redis store's keys, its Lua scripts, and the layout's version and migrations.

Layout 2, under a prefix (``auth-refresh:``):

* ``family:<id>``: a hash per family, expiring with its live token; ``gen`` is the subject's
  generation when it started.
* ``families:<subject>``: a sorted set of the subject's families scored by their expiry (ms),
  pruned of expired ones at each login: bounded by the live families.
* ``generation:<subject>``: bumped by ``revoke_subject``; a family of an older generation is
  revoked. One O(1) step however many families a subject has, and a login racing it either
  reads the old generation (and is revoked) or the new one (and started after it).
* ``schema``: the layout's version. Layout 1 (the first releases, no ``schema`` key) kept token
  ids and the grace pair in the clear and a plain set per subject; ``migrate`` rewrites it.

The scripts name keys they were not given (from a family's subject): a standalone Redis, not
Redis Cluster.
"""

from __future__ import annotations

import json
import math
from typing import cast

import redis.asyncio as redis

from auth_refresh.exceptions import ConfigurationError
from auth_refresh.sealing import seal_pair, token_digest

__all__ = ["LAYOUT_VERSION", "Keys", "migrate"]

LAYOUT_VERSION = 2
SCAN_BATCH = 500

# Numbers go in and out as strings: '%.17g' gives back the exact double that came in.
START_FAMILY = """
local now_ms = math.floor(tonumber(ARGV[2]) * 1000)
local expires_ms = math.ceil(tonumber(ARGV[3]) * 1000)
local lifetime_ms = math.ceil(tonumber(ARGV[6]) * 1000)
redis.call('HSET', KEYS[1], 'subject', ARGV[1], 'created_at', ARGV[2], 'expires_at', ARGV[3],
    'live', ARGV[4], 'gen', redis.call('GET', KEYS[3]) or '0')
redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', expires_ms))
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
    'previous', 'consumed_at', 'successor', 'revoked', 'gen')
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
        'live', successor_id, 'previous', token_id, 'consumed_at', ARGV[5])
    if grace > 0 then
        redis.call('HSET', KEYS[1], 'successor', successor_pair)
    else
        redis.call('HDEL', KEYS[1], 'successor')
    end
    redis.call('PEXPIREAT', KEYS[1], expires_ms)
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
    await client.set(keys.schema, LAYOUT_VERSION, nx=True)


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
