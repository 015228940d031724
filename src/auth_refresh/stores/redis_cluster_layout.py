"""The Redis Cluster store's key layout: its keys, the Lua functions the shared scripts
(``redis_scripts``) call over them, its own scripts, and the layout's version.

Layout 2 (docs/redis-cluster-store.md): a family's hash under its id's tag, with the session it
is; a subject's index under the subject's tag: ``sessions`` (a sorted set of members,
``redis_scripts.list_member``, in list order) and ``index`` (a hash of each member's family);
a session's family under the session id's tag; the version in ``<prefix>schema``. Each script
touches one slot. Layout 1 indexed a subject's families in a plain set, ``families``.
"""

from __future__ import annotations

__all__ = [
    "CHECK_LAYOUT",
    "END_SESSION",
    "INDEXED_PAGE",
    "INDEX_FAMILY",
    "LAYOUT_VERSION",
    "UNINDEX",
    "ClusterKeys",
]

# The key layout's version, kept in the key ``<prefix>schema``: a newer one is refused.
LAYOUT_VERSION = 2

# KEYS[1]: the layout's version key. Written if no store has yet; the version found.
CHECK_LAYOUT = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"""

# KEYS: the subject's sessions and index; ARGV: member, family id, absolute lifetime, max
# sessions ('' for no check). The whole index (member, family, ...) when it holds more than
# the cap, else nothing.
INDEX_FAMILY = """
redis.call('ZADD', KEYS[1], 0, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local lifetime_ms = math.ceil(tonumber(ARGV[3]) * 1000)
for _, key in ipairs(KEYS) do
    if redis.call('PTTL', key) < lifetime_ms then
        redis.call('PEXPIRE', key, string.format('%.0f', lifetime_ms))
    end
end
if ARGV[4] ~= '' and redis.call('ZCARD', KEYS[1]) > tonumber(ARGV[4]) then
    return redis.call('HGETALL', KEYS[2])
end
return {}
"""

# KEYS: the subject's sessions and index; ARGV: the member a page starts after ('' for the
# first), how many. {members, their families} in list order.
INDEXED_PAGE = """
local bound = '+'
if ARGV[1] ~= '' then
    bound = '(' .. ARGV[1]
end
local members = redis.call('ZREVRANGEBYLEX', KEYS[1], bound, '-', 'LIMIT', 0, ARGV[2])
if #members == 0 then
    return {{}, {}}
end
return {members, redis.call('HMGET', KEYS[2], unpack(members))}
"""

# KEYS: the subject's sessions and index; ARGV: members that leave it.
UNINDEX = """
redis.call('ZREM', KEYS[1], unpack(ARGV))
redis.call('HDEL', KEYS[2], unpack(ARGV))
return 1
"""

# KEYS[1]: a family of the subject's index; ARGV: now, the session kept ('' for none), a
# tombstone's lifetime. 'kept', 'ended' (a live session revoked), 'dead' (revoked already or
# expired; revoked now) or 'missing' (a tombstone stands for it: a login half done is revoked).
END_SESSION = """
if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('HSET', KEYS[1], 'revoked', '1')
    redis.call('EXPIRE', KEYS[1], ARGV[3])
    return 'missing'
end
local live = live_session(KEYS[1], tonumber(ARGV[1]))
if live and live[2] == ARGV[2] then
    return 'kept'
end
revoke(KEYS[1])
if live then
    return 'ended'
end
return 'dead'
"""

# The other keys are in other slots: the store indexes a family and names its session in
# steps of their own, keeps the cap and revokes a subject's sessions over the index (no
# generations), and a session step is given its family's key, found by a step before it.
HOOKS = """
local function outdated(subject, gen) return false end
local function forget(subject, member) end
local function extend(subject, member, sid, now, expires_ms) end
local function started(subject, family_id, sid, now, expires_ms, lifetime, member, max_sessions)
end
local function family_of(key) return key end
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
        """Layout 1's index of a subject's families (migrated to the two below)."""
        return f"{self.prefix}{{s:{subject}}}:families"

    def sessions(self, subject: str) -> str:
        return f"{self.prefix}{{s:{subject}}}:sessions"

    def index(self, subject: str) -> str:
        return f"{self.prefix}{{s:{subject}}}:index"

    def session(self, session_id: str) -> str:
        return f"{self.prefix}{{v:{session_id}}}"
