"""``redis-cluster://host:port``: token families in Redis Cluster (extra ``auth-refresh[redis]``),
through redis-py's cluster client (``redis.asyncio.cluster.RedisCluster``).

The URL names one or more seed nodes (``redis-cluster://a:6379,b:6379``), credentials as in
``redis://`` URLs, and ``rediss-cluster://`` connects with TLS; the client finds the rest of the
cluster from them. ``socket_timeout`` and ``socket_connect_timeout`` in the query override the
defaults (1 s and 0.5 s).

Every script touches one slot. A family is one hash whose hash tag is its id,
``auth-refresh:{f:<family>}``, so a refresh, which knows only the family, is one ``EVALSHA`` on
that slot's primary: one round trip, atomic there. A subject's index of families is a set under
the subject's tag, ``auth-refresh:{s:<subject>}:families``, in another slot, so the steps that
need both are two single-slot steps, ordered so that nothing is missed:

- a login adds the family to its subject's index first, then creates the family;
- ``revoke_subject`` reads the index, then revokes each family in its own slot, 100 at a
  time through the client's pipeline (one write per node). A family the index names but that
  does not exist yet (a login between its two steps) gets a revoked tombstone, which its
  creation keeps: a login racing the revoke is either revoked or started after it. Families
  that have expired leave the index.

The layout's version is the key ``auth-refresh:schema``, written by the first store to use the
cluster; a newer version is refused with ``ConfigurationError``.

When a primary is down, the steps on its slots fail with ``StoreUnavailableError`` within the
step deadline (1.5 s) and the other slots keep working; the client rediscovers the cluster's
layout after an error, so the store recovers on its own once the node is back.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import urllib.parse
from collections.abc import Awaitable
from typing import Any, TypeVar, cast

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from auth_refresh.authentication import TokenPair
from auth_refresh.exceptions import ConfigurationError, StoreUnavailableError
from auth_refresh.store import Rotation, RotationOutcome, Successor

__all__ = ["RedisClusterRefreshTokenStore"]

URL_SCHEMES = {"redis-cluster": "redis", "rediss-cluster": "rediss"}
CONNECT_TIMEOUT_SECONDS = 0.5
# Longer than the standalone store's 0.5 s: redis-py's cluster client answers a read timeout by
# looking at the whole cluster again and reconnecting, which under CPU starvation caused more
# timeouts. The step deadline still bounds every step.
SOCKET_TIMEOUT_SECONDS = 1.0
STEP_DEADLINE_SECONDS = 1.5
KEY_PREFIX = "auth-refresh:"
# The key layout's version, kept in the key ``<prefix>schema``: a newer one is refused.
LAYOUT_VERSION = 1
# How long a tombstone waits for the login that revoke_subject saw half done.
TOMBSTONE_SECONDS = 60

T = TypeVar("T")

store_log = logging.getLogger("auth_refresh.store")

# KEYS[1]: the family. A tombstone left by revoke_subject keeps the family revoked.
START_FAMILY = """
redis.call('HSET', KEYS[1], 'subject', ARGV[1], 'created_at', ARGV[2],
    'expires_at', ARGV[3], 'live', ARGV[4])
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
        'live', successor_id, 'previous', token_id, 'consumed_at', ARGV[5])
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

SHAS = {
    script: hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
    for script in (START_FAMILY, INDEX_FAMILY, ROTATE, REVOKE_FAMILY)
}
# revoke_subject revokes this many families at a time, each batch under one step deadline.
REVOKE_BATCH = 100


class RedisClusterRefreshTokenStore:
    """Families in Redis Cluster; each step one single-slot script."""

    def __init__(self, client: RedisCluster, *, key_prefix: str = KEY_PREFIX) -> None:
        self._client = client
        self._prefix = key_prefix
        self._found_cluster = False
        self._finding_cluster = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str) -> RedisClusterRefreshTokenStore:
        """A store over a new cluster client for ``url`` (``redis-cluster://host:port,...``)."""
        parts = urllib.parse.urlsplit(url)
        scheme = URL_SCHEMES.get(parts.scheme)
        userinfo, _, hosts = parts.netloc.rpartition("@")
        try:
            nodes = [_node(address) for address in hosts.split(",")]
        except ValueError:
            nodes = []
        if scheme is None or not nodes or parts.path not in ("", "/", "/0"):
            raise ConfigurationError(
                "a Redis Cluster URL is redis-cluster://host:port[,host:port...] "
                "(rediss-cluster:// with TLS), with database 0 only"
            )
        first = f"{nodes[0].host}:{nodes[0].port}"
        seed_url = urllib.parse.urlunsplit(
            (scheme, f"{userinfo}@{first}" if userinfo else first, "", parts.query, "")
        )
        try:
            client = RedisCluster.from_url(
                seed_url,
                startup_nodes=nodes,
                decode_responses=True,
                # Another node's slots keep working while one primary is down.
                require_full_coverage=False,
                # A retry would double the wait on a dead node; the client may retry instead.
                retry=Retry(NoBackoff(), 0),
                socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                socket_timeout=SOCKET_TIMEOUT_SECONDS,
            )
        except (ValueError, RedisClusterException) as error:
            raise ConfigurationError(f"not a usable Redis Cluster URL: {error}") from None
        return cls(client)

    def _family_key(self, family_id: str) -> str:
        return f"{self._prefix}{{f:{family_id}}}"

    def _index_key(self, subject: str) -> str:
        return f"{self._prefix}{{s:{subject}}}:families"

    async def start_family(
        self,
        family_id: str,
        subject: str,
        token_id: str,
        *,
        token_expires_at: float,
        now: float,
        absolute_lifetime: float,
    ) -> None:
        expires_at = min(token_expires_at, now + absolute_lifetime)
        # The index first: a revoke_subject between the two steps leaves a tombstone.
        await self._step(
            self._script(
                INDEX_FAMILY, [self._index_key(subject)], [family_id, _number(absolute_lifetime)]
            )
        )
        await self._step(
            self._script(
                START_FAMILY,
                [self._family_key(family_id)],
                [subject, _number(now), _number(expires_at), token_id],
            )
        )

    async def rotate(
        self,
        family_id: str,
        token_id: str,
        successor: Successor,
        *,
        now: float,
        grace_seconds: float,
        absolute_lifetime: float,
    ) -> Rotation:
        answer = await self._step(
            self._script(
                ROTATE,
                [self._family_key(family_id)],
                [
                    token_id,
                    successor.token_id,
                    json.dumps(successor.pair),
                    _number(successor.expires_at),
                    _number(now),
                    _number(grace_seconds),
                    _number(absolute_lifetime),
                ],
            )
        )
        outcome = RotationOutcome(answer[0])
        subject = answer[1] if len(answer) > 1 else None
        if outcome is RotationOutcome.ROTATED:
            return Rotation(outcome, subject, successor.pair)
        pair = cast(TokenPair, json.loads(answer[2])) if len(answer) > 2 else None
        return Rotation(outcome, subject, pair)

    async def revoke_family(self, family_id: str) -> None:
        await self._step(self._script(REVOKE_FAMILY, [self._family_key(family_id)], [""]))

    async def revoke_subject(self, subject: str) -> None:
        index = self._index_key(subject)
        members = await self._step(self._command("SMEMBERS", index))
        family_ids = sorted(cast(set[str], members))
        for start in range(0, len(family_ids), REVOKE_BATCH):
            batch = family_ids[start : start + REVOKE_BATCH]
            existed = await self._step(self._revoke_families(batch))
            gone = [family for family, found in zip(batch, existed, strict=True) if not found]
            if gone:
                # A tombstone stands for each now: dropping them from the index loses nothing.
                await self._step(self._command("SREM", index, *gone))

    async def close(self) -> None:
        await self._client.aclose()

    async def _revoke_families(self, family_ids: list[str]) -> list[Any]:
        await self._find_cluster()
        # The client's pipeline sends each node its share of the scripts in one write, on one
        # connection: a subject with many families does not open a connection per family.
        # EVAL, not EVALSHA: a pipeline cannot fall back on NOSCRIPT per command.
        pipe = self._client.pipeline()
        for family_id in family_ids:
            pipe.eval(REVOKE_FAMILY, 1, self._family_key(family_id), TOMBSTONE_SECONDS)
        return await pipe.execute()

    async def _command(self, *command: str) -> Any:
        await self._find_cluster()
        return await self._client.execute_command(*command)

    async def _script(self, script: str, keys: list[str], args: list[Any]) -> Any:
        await self._find_cluster()
        try:
            return await self._client.evalsha(SHAS[script], len(keys), *keys, *args)
        except NoScriptError:
            # This node has not seen the script yet (or restarted): EVAL caches it there.
            return await self._client.eval(script, len(keys), *keys, *args)

    async def _find_cluster(self) -> None:
        # redis-py's cluster client, sent many commands before it has found the cluster, can
        # fail some of them (it opens connections while it replaces them): the first step
        # finds the cluster alone, through the client's public initialize(), and checks the
        # layout's version.
        if not self._found_cluster:
            async with self._finding_cluster:
                if not self._found_cluster:
                    await self._client.initialize()
                    await self._check_layout()
                    self._found_cluster = True

    async def _check_layout(self) -> None:
        key = self._prefix + "schema"
        await self._client.set(key, LAYOUT_VERSION, nx=True)
        version = int(cast(str, await self._client.get(key)))
        if version > LAYOUT_VERSION:
            raise ConfigurationError(
                f"the Redis Cluster store's data has layout version {version}, newer than this "
                f"release's {LAYOUT_VERSION}: upgrade auth-refresh, or use another cluster"
            )

    async def _step(self, work: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(STEP_DEADLINE_SECONDS):
                return await work
        except (RedisError, OSError, TimeoutError) as error:
            store_log.warning("Redis Cluster unavailable: %s: %s", type(error).__name__, error)
            raise StoreUnavailableError() from None
        except AttributeError as error:
            # redis-py 8.1's cluster client, after a timeout under load, can hand a command a
            # connection it has just closed ('NoneType' has no attribute 'writelines'): the
            # step failed before it reached Redis, so this is a 503, not a 500.
            store_log.warning("Redis Cluster client error: %s", error)
            raise StoreUnavailableError() from None


def _node(address: str) -> ClusterNode:
    host, _, port = address.rpartition(":")
    if not host or not port:
        raise ValueError(address)
    return ClusterNode(urllib.parse.unquote(host.strip("[]")), int(port))


def _number(value: float) -> str:
    # repr is the shortest string that reads back as the same double, in Python and in Lua.
    return repr(float(value))
