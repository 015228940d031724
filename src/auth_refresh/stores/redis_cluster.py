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
import math
import urllib.parse
from collections.abc import Awaitable
from typing import Any, TypeVar, cast

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException

from auth_refresh.exceptions import ConfigurationError, StoreUnavailableError
from auth_refresh.stores.redis_cluster_layout import (
    CHECK_LAYOUT,
    INDEX_FAMILY,
    LAYOUT_VERSION,
    ClusterKeys,
)
from auth_refresh.stores.redis_core import (
    CONNECT_TIMEOUT_SECONDS,
    KEY_PREFIX,
    RedisStoreCore,
    ScriptCall,
    failing_as_unavailable,
    newer_layout,
    number,
    run_script,
    run_scripts,
    store_log,
)
from auth_refresh.stores.redis_scripts import Script

__all__ = ["RedisClusterRefreshTokenStore"]

URL_SCHEMES = {"redis-cluster": "redis", "rediss-cluster": "rediss"}
# Longer than the standalone store's 0.5 s: redis-py's cluster client answers a read timeout by
# looking at the whole cluster again and reconnecting, which under CPU starvation caused more
# timeouts. The step deadline still bounds every step.
SOCKET_TIMEOUT_SECONDS = 1.0
# How long a tombstone waits for the login that revoke_subject saw half done.
TOMBSTONE_SECONDS = 60
# revoke_subject and list_sessions take this many families at a time, each batch one step.
FAMILY_BATCH = 100

T = TypeVar("T")


class RedisClusterRefreshTokenStore(RedisStoreCore[ClusterKeys]):
    """Families in Redis Cluster; each step one single-slot script."""

    def __init__(self, client: RedisCluster, *, key_prefix: str = KEY_PREFIX) -> None:
        super().__init__(ClusterKeys(key_prefix))
        self._client = client
        self._index_family = Script.of(INDEX_FAMILY)
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

    async def _index(self, subject: str, family_id: str, absolute_lifetime: float) -> None:
        # The index first: a revoke_subject between this step and the family's leaves a
        # tombstone.
        index = self.keys.families(subject)
        await self._run(self._index_family, [index], [family_id, number(absolute_lifetime)])

    async def _name_session(self, session_id: str, family_id: str, until: float) -> None:
        # For as long as the family can live: its own slot, written last (a session not found
        # yet is a login not done yet).
        until_ms = str(math.ceil(until * 1000))
        session = self.keys.session(session_id)
        await self._step(self._command("SET", session, family_id, "PXAT", until_ms))

    async def revoke_subject(self, subject: str) -> None:
        index = self.keys.families(subject)
        tombstone = [str(TOMBSTONE_SECONDS)]
        for batch in await self._indexed(index):
            calls = [(self._revoke_family, [self.keys.family(f)], tombstone) for f in batch]
            existed = await self._step(self._scripts(calls))
            gone = [family for family, found in zip(batch, existed, strict=True) if not found]
            if gone:
                # A tombstone stands for each now: dropping them from the index loses nothing.
                await self._step(self._command("SREM", index, *gone))

    async def _session_entry(self, session_id: str) -> str | None:
        # The session's key is in another slot than its family's: a step of its own.
        family_id = await self._step(self._command("GET", self.keys.session(session_id)))
        return None if family_id is None else self.keys.family(family_id)

    async def _session_rows(self, subject: str, args: list[str]) -> list[Any]:
        rows: list[Any] = []
        for batch in await self._indexed(self.keys.families(subject)):
            calls = [(self._list_sessions, [self.keys.family(f)], args) for f in batch]
            for answer in await self._step(self._scripts(calls)):
                rows.extend(answer)
        return rows

    async def _indexed(self, index: str) -> list[list[str]]:
        """The families ``index`` names, in batches of ``FAMILY_BATCH``."""
        members = await self._step(self._command("SMEMBERS", index))
        family_ids = sorted(cast(set[str], members))
        return [
            family_ids[start : start + FAMILY_BATCH]
            for start in range(0, len(family_ids), FAMILY_BATCH)
        ]

    async def close(self) -> None:
        await self._client.aclose()

    async def migrate(self) -> int:
        """Find the cluster and check the layout now (the first step would); its version."""
        return await self._step(self._migrated_version())

    async def _migrated_version(self) -> int:
        await self._find_cluster()
        return int(cast(str, await self._client.get(self.keys.schema)))

    async def _run(self, script: Script, keys: list[str], args: list[str]) -> Any:
        return await self._step(self._script((script, keys, args)))

    async def _script(self, call: ScriptCall) -> Any:
        await self._find_cluster()
        return await run_script(self._client, call)

    async def _scripts(self, calls: list[ScriptCall]) -> list[Any]:
        await self._find_cluster()
        # The client's pipeline sends each node its share of the scripts in one write, on one
        # connection: a subject with many families does not open a connection per family.
        answers = await run_scripts(self._client.pipeline(), calls)
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
        return answers

    async def _command(self, *command: str) -> Any:
        await self._find_cluster()
        return await self._client.execute_command(*command)

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
        found = await self._client.eval(CHECK_LAYOUT, 1, self.keys.schema, LAYOUT_VERSION)
        version = int(cast(str, found))
        if version > LAYOUT_VERSION:
            raise newer_layout("Redis Cluster store", version, LAYOUT_VERSION, "another cluster")

    async def _step(self, work: Awaitable[T]) -> T:
        try:
            async with failing_as_unavailable("Redis Cluster", self.step_deadline):
                return await work
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
