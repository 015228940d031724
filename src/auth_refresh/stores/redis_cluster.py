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

A family's hash also holds the session it is (``sid``, ``refreshed_at``, ``ua``, ``ip``), and
``auth-refresh:{v:<session id>}`` names a session's family, in the session id's slot: finding a
session is two single-slot steps, the session's key, then its family.

The layout's version is the key ``auth-refresh:schema``, written by the first store to use the
cluster; a newer version is refused with ``ConfigurationError``.

When a primary is down, the steps on its slots fail with ``StoreUnavailableError`` within the
step deadline (1.5 s) and the other slots keep working; the client rediscovers the cluster's
layout after an error, so the store recovers on its own once the node is back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import urllib.parse
from collections.abc import Awaitable
from typing import Any, TypeVar, cast

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from auth_refresh.exceptions import ConfigurationError, StoreUnavailableError
from auth_refresh.stores.base import (
    Rotation,
    RotationOutcome,
    SessionRecord,
    SessionStart,
    Successor,
)
from auth_refresh.stores.redis_cluster_layout import (
    CHECK_LAYOUT,
    INDEX_FAMILY,
    LAYOUT_VERSION,
    REVOKE_FAMILY,
    REVOKE_SESSION,
    ROTATE,
    SESSION_FIELDS,
    SHAS,
    START_FAMILY,
)
from auth_refresh.types import TokenPair

__all__ = ["RedisClusterRefreshTokenStore"]

URL_SCHEMES = {"redis-cluster": "redis", "rediss-cluster": "rediss"}
CONNECT_TIMEOUT_SECONDS = 0.5
# Longer than the standalone store's 0.5 s: redis-py's cluster client answers a read timeout by
# looking at the whole cluster again and reconnecting, which under CPU starvation caused more
# timeouts. The step deadline still bounds every step.
SOCKET_TIMEOUT_SECONDS = 1.0
STEP_DEADLINE_SECONDS = 1.5
KEY_PREFIX = "auth-refresh:"
# How long a tombstone waits for the login that revoke_subject saw half done.
TOMBSTONE_SECONDS = 60

T = TypeVar("T")

store_log = logging.getLogger("auth_refresh.store")

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

    def _session_key(self, session_id: str) -> str:
        return f"{self._prefix}{{v:{session_id}}}"

    async def start_family(
        self,
        family_id: str,
        subject: str,
        token_id: str,
        *,
        token_expires_at: float,
        now: float,
        absolute_lifetime: float,
        session: SessionStart,
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
                [
                    subject,
                    _number(now),
                    _number(expires_at),
                    token_id,
                    session.session_id,
                    session.user_agent or "",
                    session.client_ip or "",
                ],
            )
        )
        # The session's family, for as long as the family can live: its own slot, written
        # last (a session not found yet is a login not done yet).
        await self._step(
            self._command(
                "SET",
                self._session_key(session.session_id),
                family_id,
                "PXAT",
                str(math.ceil((now + absolute_lifetime) * 1000)),
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

    async def session_active(self, session_id: str, *, now: float) -> bool:
        family_id = await self._step(self._command("GET", self._session_key(session_id)))
        if family_id is None:
            return False
        family = await self._step(self._read_family(family_id))
        return _live_session(family, session_id, now) is not None

    async def list_sessions(self, subject: str, *, now: float) -> list[SessionRecord]:
        members = await self._step(self._command("SMEMBERS", self._index_key(subject)))
        family_ids = sorted(cast(set[str], members))
        sessions: list[SessionRecord] = []
        for start in range(0, len(family_ids), REVOKE_BATCH):
            families = await self._step(
                self._read_families(family_ids[start : start + REVOKE_BATCH])
            )
            for family in families:
                session = _live_session(family, None, now)
                if session is not None and family.get("subject") == subject:
                    sessions.append(session)
        return sorted(sessions, key=lambda session: session.created_at, reverse=True)

    async def revoke_session(self, subject: str, session_id: str, *, now: float) -> bool:
        family_id = await self._step(self._command("GET", self._session_key(session_id)))
        if family_id is None:
            return False
        revoked = await self._step(
            self._script(
                REVOKE_SESSION, [self._family_key(family_id)], [subject, session_id, _number(now)]
            )
        )
        return bool(revoked)

    async def close(self) -> None:
        await self._client.aclose()

    async def _read_family(self, family_id: str) -> dict[str, str | None]:
        await self._find_cluster()
        values = await self._client.hmget(self._family_key(family_id), list(SESSION_FIELDS))
        return dict(zip(SESSION_FIELDS, cast(list[str | None], values), strict=True))

    async def _read_families(self, family_ids: list[str]) -> list[dict[str, str | None]]:
        await self._find_cluster()
        # One write per node through the client's pipeline, as revoke_subject's batches.
        pipe = self._client.pipeline()
        for family_id in family_ids:
            pipe.hmget(self._family_key(family_id), list(SESSION_FIELDS))
        answers = await pipe.execute()
        return [dict(zip(SESSION_FIELDS, values, strict=True)) for values in answers]

    async def _revoke_families(self, family_ids: list[str]) -> list[Any]:
        await self._find_cluster()
        # The client's pipeline sends each node its share of the scripts in one write, on one
        # connection: a subject with many families does not open a connection per family.
        # EVAL, not EVALSHA: a pipeline cannot fall back on NOSCRIPT per command.
        pipe = self._client.pipeline()
        for family_id in family_ids:
            pipe.eval(REVOKE_FAMILY, 1, self._family_key(family_id), TOMBSTONE_SECONDS)
        return await pipe.execute()

    async def migrate(self) -> int:
        """Find the cluster and check the layout now (the first step would); its version."""
        return await self._step(self._migrated_version())

    async def _migrated_version(self) -> int:
        await self._find_cluster()
        return int(cast(str, await self._client.get(self._prefix + "schema")))

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
        # One round trip: written if no store has yet, and the version found.
        found = await self._client.eval(CHECK_LAYOUT, 1, self._prefix + "schema", LAYOUT_VERSION)
        version = int(cast(str, found))
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


def _live_session(
    family: dict[str, str | None], session_id: str | None, now: float
) -> SessionRecord | None:
    """The session ``family`` is, if it is live (and ``session_id``'s, when given)."""
    sid, created_at, expires_at = family["sid"], family["created_at"], family["expires_at"]
    if sid is None or created_at is None or expires_at is None or family["revoked"] == "1":
        return None
    if (session_id is not None and sid != session_id) or now >= float(expires_at):
        return None
    refreshed_at = family["refreshed_at"]
    return SessionRecord(
        session_id=sid,
        created_at=float(created_at),
        last_refreshed_at=float(refreshed_at) if refreshed_at is not None else float(created_at),
        user_agent=family["ua"],
        client_ip=family["ip"],
    )


def _number(value: float) -> str:
    # repr is the shortest string that reads back as the same double, in Python and in Lua.
    return repr(float(value))
