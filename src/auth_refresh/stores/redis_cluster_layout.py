"""The Redis Cluster store's key layout: its keys, the Lua functions the shared scripts
(``redis_scripts``) call over them, its own scripts, and the layout's version.

Layout 1 (docs/redis-cluster-store.md): a family's hash under its id's tag, with the session it
is; a subject's set of families under the subject's tag; a session's family under the session
id's tag; the version in ``<prefix>schema``. Each script touches one key: one slot.
"""

from __future__ import annotations

__all__ = ["CHECK_LAYOUT", "INDEX_FAMILY", "LAYOUT_VERSION", "ClusterKeys"]

# The key layout's version, kept in the key ``<prefix>schema``: a newer one is refused.
LAYOUT_VERSION = 1

# KEYS[1]: the layout's version key. Written if no store has yet; the version found.
CHECK_LAYOUT = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"""

# KEYS[1]: the subject's index of families; ARGV: family id, absolute lifetime.
INDEX_FAMILY = """
redis.call('SADD', KEYS[1], ARGV[1])
local lifetime_ms = math.ceil(tonumber(ARGV[2]) * 1000)
if redis.call('PTTL', KEYS[1]) < lifetime_ms then
    redis.call('PEXPIRE', KEYS[1], string.format('%.0f', lifetime_ms))
end
return 1
"""

# The other keys are in other slots: the store indexes a family and names its session in
# steps of their own, revoke_subject revokes each family (no generations), and a session step
# is given its family's key, found by a step before it.
HOOKS = """
local function outdated(subject, gen) return false end
local function forget(subject, family_id) end
local function extend(subject, family_id, sid, expires_ms) end
local function started(subject, family_id, sid, now, expires_ms, lifetime) end
local function family_of(key) return key end
local function families_of(key, now) return {key} end
"""


class ClusterKeys:
    """The key names under one prefix, each hash-tagged with what decides its slot."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.schema = prefix + "schema"
        self.lua = HOOKS

    def family(self, family_id: str) -> str:
        return f"{self.prefix}{{f:{family_id}}}"

    def families(self, subject: str) -> str:
        return f"{self.prefix}{{s:{subject}}}:families"

    def session(self, session_id: str) -> str:
        return f"{self.prefix}{{v:{session_id}}}"
