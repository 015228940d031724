"""The Redis Cluster store's migration from layout 1 (a plain set of a subject's families, revoked
ones too, however many) to layout 2 (``redis_cluster_layout``), in short steps: each old index
is read in batches, its live families indexed (the most recently refreshed
``MIGRATED_SESSIONS_MAX``; those beyond are revoked), and the old set unlinked.
"""

from __future__ import annotations

import time

from redis.asyncio.cluster import RedisCluster

from auth_refresh.stores.redis_cluster_layout import END_SESSION, ClusterKeys
from auth_refresh.stores.redis_core import number, run_script, run_scripts
from auth_refresh.stores.redis_migration import MIGRATED_SESSIONS_MAX, SCAN_BATCH, scan_batches
from auth_refresh.stores.redis_scripts import Script, layout_script, list_member

__all__ = ["migrate_cluster"]

FIELDS = ("subject", "sid", "created_at", "refreshed_at", "expires_at", "revoked")

# KEYS: the subject's sessions and index; ARGV: the old index's time to live (ms), then per
# family its member and id.
ADD_INDEXED = """
for i = 2, #ARGV, 2 do
    redis.call('ZADD', KEYS[1], 0, ARGV[i])
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
local ttl = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
    if ttl > 0 and redis.call('PTTL', key) < ttl then
        redis.call('PEXPIRE', key, ARGV[1])
    end
end
return 1
"""


async def migrate_cluster(client: RedisCluster, keys: ClusterKeys) -> None:
    """Every layout 1 index in the cluster as layout 2's."""
    tag_start = len(keys.prefix) + len("{s:")
    suffix = "}:families"
    async for old in client.scan_iter(match=keys.prefix + "{s:*" + suffix, count=SCAN_BATCH):
        await _migrate_index(client, keys, old, old[tag_start : -len(suffix)])


async def _migrate_index(client: RedisCluster, keys: ClusterKeys, old: str, subject: str) -> None:
    now = time.time()
    ttl = await client.pttl(old)
    live: list[tuple[float, str, str]] = []  # last activity, member, family id
    async for family_ids in scan_batches(client.sscan_iter(old, count=SCAN_BATCH)):
        pipe = client.pipeline()
        for family_id in family_ids:
            pipe.hmget(keys.family(family_id), FIELDS)
        for family_id, values in zip(family_ids, await pipe.execute(), strict=True):
            fields = dict(zip(FIELDS, values, strict=True))
            if (
                fields["subject"] == subject
                and fields["sid"] is not None
                and fields["revoked"] != "1"
                and float(fields["expires_at"]) > now
            ):
                member = list_member(float(fields["created_at"]), fields["sid"])
                active = float(fields["refreshed_at"] or fields["created_at"])
                live.append((active, member, family_id))
    live.sort(reverse=True)
    add = Script.of(ADD_INDEXED, "migrate index")
    index_keys = [keys.sessions(subject), keys.index(subject)]
    kept = live[:MIGRATED_SESSIONS_MAX]
    for start in range(0, len(kept), SCAN_BATCH):
        args = [str(max(ttl, 0))]
        for _, member, family_id in kept[start : start + SCAN_BATCH]:
            args += [member, family_id]
        await run_script(client, (add, index_keys, args))
    end_session = layout_script(keys, END_SESSION, "end session")
    beyond = live[MIGRATED_SESSIONS_MAX:]
    for start in range(0, len(beyond), SCAN_BATCH):
        calls = [
            (end_session, [keys.family(family_id)], [number(now), "", "60"])
            for _, _, family_id in beyond[start : start + SCAN_BATCH]
        ]
        await run_scripts(client.pipeline(), calls)
    await client.unlink(old)
