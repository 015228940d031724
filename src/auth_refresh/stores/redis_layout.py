"""The Redis store's key layout: its keys, the Lua functions the shared scripts
(``redis_scripts``) call over them, and the scripts of its own (paging, revoking a subject's
sessions). Migrations from older layouts are ``redis_migration``'s.

Layout 4, under a prefix (``auth-refresh:``):

* ``family:<id>``: a hash per family, expiring with its live token; ``gen`` is the subject's
  generation when it started; ``sid``, ``refreshed_at``, ``ua`` and ``ip`` describe the session
  it is, ``ix`` its member in its subject's index.
* ``session:<sid>``: the family id of a session, expiring with its family.
* The subject's index, three sorted sets of the same members (``redis_scripts.list_member``:
  the session's ``created_at`` and id, in list order), one per family neither revoked nor
  expired: ``sessions:<subject>`` (all scores 0: ordered by member, for paging),
  ``expiries:<subject>`` (scored by expiry, ms) and ``activity:<subject>`` (scored by the last
  refresh, or the start). A revocation takes the family out in the same script, and a login
  the expired ones and, beyond the cap, the least recently refreshed: no index holds more than
  the cap.
* ``generation:<subject>``: bumped by ``revoke_subject``; a family of an older generation is
  revoked (the families of layout 3, whose index kept revoked families, relied on it).
* ``schema``: the layout's version.

The scripts name keys they were not given (from a family's subject or session): a standalone
Redis, not Redis Cluster.
"""

from __future__ import annotations

from auth_refresh.stores.redis_scripts import lua_string

__all__ = ["END_SESSIONS", "LAYOUT_VERSION", "LIST_PAGE", "Keys"]

LAYOUT_VERSION = 4

# The functions the shared scripts call (redis_scripts), after ``local prefix = ...``.
HOOKS = """
local function family_key(family_id) return prefix .. 'family:' .. family_id end
local function sessions_key(subject) return prefix .. 'sessions:' .. subject end
local function expiries_key(subject) return prefix .. 'expiries:' .. subject end
local function activity_key(subject) return prefix .. 'activity:' .. subject end
local function generation_key(subject) return prefix .. 'generation:' .. subject end
local function session_key(session_id) return prefix .. 'session:' .. session_id end
local function outdated(subject, gen)
    local generation = redis.call('GET', generation_key(subject))
    return generation and tonumber(generation) > tonumber(gen or '0')
end
local function forget(subject, member)
    if member then
        redis.call('ZREM', sessions_key(subject), member)
        redis.call('ZREM', expiries_key(subject), member)
        redis.call('ZREM', activity_key(subject), member)
    end
end
local function extend(subject, member, sid, now, expires_ms)
    if sid then
        redis.call('PEXPIREAT', session_key(sid), expires_ms)
    end
    if member then
        redis.call('ZADD', expiries_key(subject), 'XX', expires_ms, member)
        redis.call('ZADD', activity_key(subject), 'XX', string.format('%.17g', now), member)
    end
end
-- The key of the family an index member names, if it still exists.
local function indexed(member)
    local family_id = redis.call('GET', session_key(string.sub(member, 17)))
    local key = family_id and family_key(family_id)
    if key and redis.call('EXISTS', key) == 1 then
        return key
    end
    return false
end
-- At each login: the expired families leave the index (those of the last millisecond checked
-- one by one), then beyond the cap the least recently refreshed others are revoked. The
-- index and the generation outlive every family of the subject.
local function started(subject, family_id, sid, now, expires_ms, lifetime, member, max_sessions)
    redis.call('HSET', KEYS[1], 'gen', redis.call('GET', generation_key(subject)) or '0')
    redis.call('SET', session_key(sid), family_id, 'PXAT', expires_ms)
    local sessions, expiries = sessions_key(subject), expiries_key(subject)
    local activity = activity_key(subject)
    local until_ms = string.format('%.0f', math.ceil(now * 1000))
    for _, old in ipairs(redis.call('ZRANGEBYSCORE', expiries, '-inf', until_ms)) do
        local key = indexed(old)
        if not (key and live_session(key, now)) then
            forget(subject, old)
        end
    end
    redis.call('ZADD', sessions, 0, member)
    redis.call('ZADD', expiries, expires_ms, member)
    redis.call('ZADD', activity, string.format('%.17g', now), member)
    local over = redis.call('ZCARD', sessions) - max_sessions
    if over > 0 then
        -- One more than the excess: the new session may be among the least recent.
        for _, old in ipairs(redis.call('ZRANGE', activity, 0, over)) do
            if over > 0 and old ~= member then
                local key = indexed(old)
                if key then
                    revoke(key)
                else
                    forget(subject, old)
                end
                over = over - 1
            end
        end
    end
    local lifetime_ms = math.ceil(lifetime * 1000)
    for _, key in ipairs({sessions, expiries, activity, generation_key(subject)}) do
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
"""

# ARGV: now, subject, how many, the member the page starts after ('' for the first page).
# The live sessions in list order, as LIST_SESSIONS gives each: walks the page and the
# index's members that are not live sessions, at most the cap.
LIST_PAGE = """
local now, subject, limit = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local sessions, found, bound = sessions_key(subject), {}, '+'
if ARGV[4] ~= '' then
    bound = '(' .. ARGV[4]
end
while #found < limit do
    local want = limit - #found
    local members = redis.call('ZREVRANGEBYLEX', sessions, bound, '-', 'LIMIT', 0, want)
    for _, member in ipairs(members) do
        local key = indexed(member)
        local f = key and live_session(key, now, string.sub(member, 17))
        if f and f[1] == subject then
            table.insert(found, {f[2], f[3], f[4] or '', f[5] or '', f[6] or ''})
        end
    end
    if #members < want then
        break
    end
    bound = '(' .. members[#members]
end
return found
"""

# ARGV: now, subject, the session kept ('' for none), '1' to bump the generation too
# (revoke_subject). Revokes every family in the subject's index, at most the cap, but the
# kept session's; how many were live sessions. No index, no generation bump: nothing to revoke
# (and no generation key left behind without an expiry).
END_SESSIONS = """
local now, subject, keep = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local sessions = sessions_key(subject)
local ttl, ended = redis.call('PTTL', sessions), 0
for _, member in ipairs(redis.call('ZRANGE', sessions, 0, -1)) do
    if string.sub(member, 17) ~= keep then
        local key = indexed(member)
        if key then
            if live_session(key, now) then
                ended = ended + 1
            end
            revoke(key)
        else
            forget(subject, member)
        end
    end
end
if ARGV[4] == '1' and ttl ~= -2 then
    redis.call('INCR', generation_key(subject))
    if ttl > 0 then
        redis.call('PEXPIRE', generation_key(subject), ttl)
    end
end
return ended
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
        """Layout 3's index of a subject's families (migrated to the three below)."""
        return self.prefix + "families:" + subject

    def sessions(self, subject: str) -> str:
        return self.prefix + "sessions:" + subject

    def expiries(self, subject: str) -> str:
        return self.prefix + "expiries:" + subject

    def activity(self, subject: str) -> str:
        return self.prefix + "activity:" + subject

    def generation(self, subject: str) -> str:
        return self.prefix + "generation:" + subject

    def session(self, session_id: str) -> str:
        return self.prefix + "session:" + session_id
