"""The Redis store's migrations to ``redis_layout.LAYOUT_VERSION``, each in short steps: no
step holds Redis for long, whatever a subject's index holds.

Layout 1 (the first releases, no ``schema`` key) kept token ids and the grace pair in the clear
and a plain set per subject; layout 2 had no sessions; layout 3 indexed a subject's families,
revoked ones included until they expired, in one sorted set ``families:<subject>`` scored by
expiry. Each is rewritten to the next in turn.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator
from typing import Any, TypeVar, cast

import redis.asyncio as redis

from auth_refresh.stores.redis_checks import newer_layout
from auth_refresh.stores.redis_core import run_script
from auth_refresh.stores.redis_layout import LAYOUT_VERSION, Keys
from auth_refresh.stores.redis_scripts import layout_script, list_member
from auth_refresh.stores.sealing import seal_pair, session_id_of, token_digest

__all__ = ["MIGRATED_SESSIONS_MAX", "SCAN_BATCH", "migrate", "scan_batches"]

T = TypeVar("T")

SCAN_BATCH = 500
# The most sessions per subject layout 3's index keeps live: the largest cap the settings
# allow (max_sessions_per_subject); the least recently refreshed beyond it are revoked.
MIGRATED_SESSIONS_MAX = 1000
INDEX_FIELDS = ("subject", "sid", "created_at", "refreshed_at", "expires_at", "revoked", "gen")

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

# Layout 3 -> 4, a batch of one subject's live families. ARGV: subject, now (ms), then per
# family its id, member, expiry (ms) and last activity. A family revoked meanwhile stays out.
INDEX_FAMILIES = """
local subject, now_ms = ARGV[1], tonumber(ARGV[2])
local sessions, expiries = sessions_key(subject), expiries_key(subject)
local activity, latest = activity_key(subject), 0
for i = 3, #ARGV, 4 do
    local key = family_key(ARGV[i])
    if redis.call('EXISTS', key) == 1 and redis.call('HGET', key, 'revoked') ~= '1' then
        redis.call('HSET', key, 'ix', ARGV[i + 1])
        redis.call('ZADD', sessions, 0, ARGV[i + 1])
        redis.call('ZADD', expiries, ARGV[i + 2], ARGV[i + 1])
        redis.call('ZADD', activity, ARGV[i + 3], ARGV[i + 1])
        latest = math.max(latest, tonumber(ARGV[i + 2]))
    end
end
if latest > 0 then
    for _, index in ipairs({sessions, expiries, activity}) do
        local ttl = redis.call('PTTL', index)
        if ttl < 0 or now_ms + ttl < latest then
            redis.call('PEXPIREAT', index, string.format('%.0f', latest))
        end
    end
end
return 1
"""

# Layout 3 -> 4: the families beyond MIGRATED_SESSIONS_MAX. ARGV: their ids.
REVOKE_FAMILIES = """
for i = 1, #ARGV do
    local key = family_key(ARGV[i])
    if redis.call('EXISTS', key) == 1 then
        revoke(key)
    end
end
return 1
"""


async def migrate(client: redis.Redis, keys: Keys) -> None:
    """Bring the layout to ``LAYOUT_VERSION``; ``ConfigurationError`` for a newer one."""
    version = await client.get(keys.schema)
    if version is not None and int(version) == LAYOUT_VERSION:
        return
    if version is not None and int(version) > LAYOUT_VERSION:
        raise newer_layout("Redis store", int(version), LAYOUT_VERSION, "another key prefix")
    # Version 1 had no schema key; a fresh database has nothing to migrate either.
    if version is None or int(version) < 3:
        await _to_layout_3(client, keys)
    index_prefix = keys.prefix + "families:"
    async for index in client.scan_iter(match=index_prefix + "*", count=SCAN_BATCH):
        await _migrate_index(client, keys, index, index.removeprefix(index_prefix))
    await client.set(keys.schema, LAYOUT_VERSION)


async def _to_layout_3(client: redis.Redis, keys: Keys) -> None:
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


async def _migrate_index(client: redis.Redis, keys: Keys, index: str, subject: str) -> None:
    """Layout 3's index of ``subject`` (revoked families too, however many) as layout 4's: its
    live families, the most recently refreshed ``MIGRATED_SESSIONS_MAX``, in batches."""
    generation = int(await client.get(keys.generation(subject)) or 0)
    now = time.time()
    live: list[tuple[float, str, str, int]] = []  # last activity, family id, member, expiry ms
    async for pairs in scan_batches(client.zscan_iter(index, count=SCAN_BATCH)):
        family_ids = [family_id for family_id, _ in pairs]
        async with client.pipeline(transaction=False) as pipe:
            for family_id in family_ids:
                pipe.hmget(keys.family(family_id), INDEX_FIELDS)
            found = await pipe.execute()
        for family_id, values in zip(family_ids, found, strict=True):
            fields = dict(zip(INDEX_FIELDS, values, strict=True))
            if _live(fields, subject, generation, now):
                expires_ms = math.ceil(float(fields["expires_at"]) * 1000)
                member = list_member(float(fields["created_at"]), fields["sid"])
                active = float(fields["refreshed_at"] or fields["created_at"])
                live.append((active, family_id, member, expires_ms))
    live.sort(reverse=True)
    index_families = layout_script(keys, INDEX_FAMILIES, "migrate index")
    for start in range(0, min(len(live), MIGRATED_SESSIONS_MAX), SCAN_BATCH):
        batch = live[start : min(start + SCAN_BATCH, MIGRATED_SESSIONS_MAX)]
        args = [subject, str(math.floor(now * 1000))]
        for active, family_id, member, expires_ms in batch:
            args += [family_id, member, str(expires_ms), repr(active)]
        await run_script(client, (index_families, [], args))
    revoke_families = layout_script(keys, REVOKE_FAMILIES, "revoke families")
    beyond = [family_id for _, family_id, _, _ in live[MIGRATED_SESSIONS_MAX:]]
    for start in range(0, len(beyond), SCAN_BATCH):
        await run_script(client, (revoke_families, [], beyond[start : start + SCAN_BATCH]))
    await client.unlink(index)


def _live(fields: dict[str, Any], subject: str, generation: int, now: float) -> bool:
    return (
        fields["subject"] == subject
        and fields["sid"] is not None
        and fields["revoked"] != "1"
        and int(fields["gen"] or 0) >= generation
        and float(fields["expires_at"]) > now
    )


async def scan_batches(items: AsyncIterator[T]) -> AsyncIterator[list[T]]:
    """A scan's items, ``SCAN_BATCH`` at a time: one pipeline each."""
    batch: list[T] = []
    async for item in items:
        batch.append(item)
        if len(batch) == SCAN_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


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
