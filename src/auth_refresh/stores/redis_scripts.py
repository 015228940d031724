"""The Lua scripts of the Redis and Redis Cluster stores, written once for both key layouts.

A script is its layout's Lua functions, then ``LIBRARY``, then its body. The body touches the
key it is given, ``KEYS[1]``; what else a step keeps up to date or consults is the layout's:

* ``outdated(subject, gen)``: true if the family, started in generation ``gen``, was revoked
  with all its subject's families since (``revoke_subject``).
* ``forget(subject, member)``: a revoked or expired family leaves its subject's index.
* ``extend(subject, member, sid, now, expires_ms)``: a rotated family's other keys live as long,
  and its refresh at ``now`` is its last.
* ``started(subject, family_id, sid, now, expires_ms, lifetime, member, max_sessions)``: a new
  family's other keys, and the cap on its subject's sessions.
* ``family_of(key)``: the family's key from the key a session step is given, or false.

A family's ``member`` (its hash's ``ix``) is its place in its subject's list of sessions:
``list_member``'s string, which sorts as the list does. The layout's functions may call
``LIBRARY``'s (``revoke``, ``live_session``, ``late``), declared before them.

The scripts that write what a client is answered with (a login, a rotation) are given their
step's deadline in the server's time (``redis_clock``) and answer ``LATE``, writing nothing,
when the server runs them after it: the step gave up and its client was answered 503, so it
must not take effect later. Revocations are not: a late one does what its client asked for,
and what the client's retry does again.

The standalone layout does all of them inside the script (``redis_layout.Keys``); in a cluster,
where those keys are in other slots, the store takes them as steps of their own and the
functions do nothing (``redis_cluster_layout.ClusterKeys``).

Numbers go in and out as strings: '%.17g' gives back the exact double that came in.
"""

from __future__ import annotations

import hashlib
import string
import struct
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "LATE",
    "LIST_SESSIONS",
    "MEMBER_PREFIX",
    "REVOKE_FAMILY",
    "REVOKE_SESSION",
    "ROTATE",
    "SESSION_ACTIVE",
    "START_FAMILY",
    "KeyLayout",
    "Script",
    "created_at_of",
    "layout_script",
    "list_member",
    "lua_string",
]

# What a script that writes answers when it ran after its step's deadline: it wrote nothing.
LATE = "late"
# A member's first characters: its created_at, as 16 hex digits that sort as the number does.
MEMBER_PREFIX = 16
_SIGN = 1 << 63


@dataclass(frozen=True)
class Script:
    """A Lua script, the SHA1 by which ``EVALSHA`` names it, and what it does (for logs)."""

    text: str
    sha: str
    name: str

    @classmethod
    def of(cls, text: str, name: str) -> Script:
        sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
        return cls(text, sha, name)


class KeyLayout(Protocol):
    """Where a store keeps families, and the Lua functions its scripts call (above)."""

    @property
    def prefix(self) -> str:
        """What every key of the layout starts with."""
        ...

    @property
    def schema(self) -> str:
        """The key of the layout's version."""
        ...

    @property
    def lua(self) -> str:
        """The functions above, in Lua."""
        ...

    def family(self, family_id: str) -> str: ...

    def session(self, session_id: str) -> str:
        """The key naming a session's family."""
        ...


def layout_script(layout: KeyLayout, body: str, name: str) -> Script:
    """``body`` over ``layout``'s keys; ``name`` says what it does."""
    return Script.of(PRELUDE + layout.lua + LIBRARY + body, name)


def list_member(created_at: float, session_id: str) -> str:
    """A session's place in its subject's list: byte order (Redis's, for members of equal
    score) is the list's order, ``created_at`` then ``session_id``, exactly."""
    bits: int = struct.unpack(">Q", struct.pack(">d", created_at + 0.0))[0]
    # Positive numbers: the sign bit set; negative ones: every bit flipped.
    bits = bits ^ (2**64 - 1) if bits & _SIGN else bits | _SIGN
    return f"{bits:016x}{session_id}"


def created_at_of(member: str) -> float:
    """The ``created_at`` a ``list_member`` holds."""
    bits = int(member[:MEMBER_PREFIX], 16)
    bits = bits & ~_SIGN if bits & _SIGN else bits ^ (2**64 - 1)
    created_at: float = struct.unpack(">d", struct.pack(">Q", bits))[0]
    return created_at


def lua_string(value: str) -> str:
    """``value`` as a Lua string literal, whatever it holds (a key prefix)."""
    # Other bytes as three-digit escapes: a digit after one cannot join it.
    escaped = (chr(byte) if chr(byte) in PLAIN else f"\\{byte:03d}" for byte in value.encode())
    return "'" + "".join(escaped) + "'"


PLAIN = frozenset(string.ascii_letters + string.digits + "-_:./ ")


PRELUDE = """
local revoke, live_session, late
"""

LIBRARY = """
-- Whether the step that sent the script gave up before the server ran it: its deadline, in
-- the server's time ('' for none: the store has not read the server's clock yet), is past.
late = function(deadline)
    if deadline == '' then
        return false
    end
    local now = redis.call('TIME')
    return tonumber(now[1]) + tonumber(now[2]) / 1000000 > tonumber(deadline)
end

-- The family at key, which exists, is revoked and leaves its subject's index.
revoke = function(key)
    local f = redis.call('HMGET', key, 'subject', 'ix')
    redis.call('HSET', key, 'revoked', '1')
    redis.call('HDEL', key, 'successor')
    if f[1] then
        forget(f[1], f[2])
    end
end

-- The family at key, if it is a live session (session_id's, when given): not revoked, by
-- any means, and not expired.
live_session = function(key, now, session_id)
    local f = redis.call('HMGET', key, 'subject', 'sid', 'created_at', 'refreshed_at', 'ua',
        'ip', 'expires_at', 'revoked', 'gen', 'ix')
    if not f[1] or not f[2] or f[8] == '1' or now >= tonumber(f[7]) then
        return nil
    end
    if (session_id and f[2] ~= session_id) or outdated(f[1], f[9]) then
        return nil
    end
    return f
end
"""

# KEYS[1]: the family. ARGV: subject, now, expires_at, live token, family id, absolute lifetime,
# session id, user agent, client ip ('' for none), member, max sessions, the step's deadline
# (LATE after it). A tombstone left by the cluster's revoke_subject keeps the family revoked:
# its 'revoked' is not written over.
START_FAMILY = """
if late(ARGV[12]) then
    return 'late'
end
local expires_ms = string.format('%.0f', math.ceil(tonumber(ARGV[3]) * 1000))
redis.call('HSET', KEYS[1], 'subject', ARGV[1], 'created_at', ARGV[2], 'expires_at', ARGV[3],
    'live', ARGV[4], 'sid', ARGV[7], 'ix', ARGV[10])
if ARGV[8] ~= '' then
    redis.call('HSET', KEYS[1], 'ua', ARGV[8])
end
if ARGV[9] ~= '' then
    redis.call('HSET', KEYS[1], 'ip', ARGV[9])
end
redis.call('PEXPIREAT', KEYS[1], expires_ms)
started(ARGV[1], ARGV[5], ARGV[7], tonumber(ARGV[2]), expires_ms, tonumber(ARGV[6]), ARGV[10],
    tonumber(ARGV[11]))
return 1
"""

# base.decide_rotation, line for line, and what the layout keeps beside the family.
# KEYS[1]: the family; ARGV: token, successor token, successor pair ('' without a grace
# window), successor expires_at, now, grace, absolute lifetime, family id, the step's deadline
# (LATE after it: the caller was answered 503, and its retry of the same token must rotate).
ROTATE = """
if late(ARGV[9]) then
    return 'late'
end
local token_id, successor_id, successor_pair = ARGV[1], ARGV[2], ARGV[3]
local successor_expires_at = tonumber(ARGV[4])
local now, grace, lifetime = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local family_id = ARGV[8]
local family = redis.call('HMGET', KEYS[1], 'subject', 'created_at', 'expires_at', 'live',
    'previous', 'consumed_at', 'successor', 'revoked', 'gen', 'sid', 'ix')
local subject = family[1]
if not subject then
    return {'unknown'}
end
local deadline = tonumber(family[2]) + lifetime
if now >= deadline or now >= tonumber(family[3]) then
    redis.call('DEL', KEYS[1])
    forget(subject, family[11])
    return {'expired', subject}
end
if family[8] == '1' then
    return {'revoked', subject}
end
if outdated(subject, family[9]) then
    revoke(KEYS[1])
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
    extend(subject, family[11], family[10], now, expires_ms)
    -- The caller holds the successor pair already: it is not sent back.
    return {'rotated', subject}
end
if token_id == family[5] and family[6] and family[7] and now < tonumber(family[6]) + grace then
    return {'grace', subject, family[7]}
end
revoke(KEYS[1])
return {'reused', subject}
"""

# KEYS[1]: the family; ARGV: a tombstone's lifetime in seconds, '' for none. 1 if the family
# existed. The tombstone stands for a family whose login the cluster's revoke_subject caught
# half done: its creation keeps it revoked.
REVOKE_FAMILY = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    revoke(KEYS[1])
    return 1
end
if ARGV[1] ~= '' then
    redis.call('HSET', KEYS[1], 'revoked', '1')
    redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return 0
"""

# KEYS[1]: for family_of; ARGV: now, session id.
SESSION_ACTIVE = """
local key = family_of(KEYS[1])
if key and live_session(key, tonumber(ARGV[1]), ARGV[2]) then
    return 1
end
return 0
"""

# KEYS[1]: for family_of; ARGV: now, session id, subject. Revokes the family if it is that
# subject's live session; 1 if it did.
REVOKE_SESSION = """
local key = family_of(KEYS[1])
local family = key and live_session(key, tonumber(ARGV[1]), ARGV[2])
if not family or family[1] ~= ARGV[3] then
    return 0
end
revoke(key)
return 1
"""

# KEYS[1]: a family; ARGV: now, subject. {sid, created_at, refreshed_at, ua, ip ('' for
# none)} if it is a live session of the subject; {} if not; false if it does not exist.
LIST_SESSIONS = """
local f = live_session(KEYS[1], tonumber(ARGV[1]))
if f and f[1] == ARGV[2] then
    return {f[2], f[3], f[4] or '', f[5] or '', f[6] or ''}
end
if redis.call('EXISTS', KEYS[1]) == 0 then
    return false
end
return {}
"""
