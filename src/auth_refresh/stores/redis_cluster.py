"""``redis-cluster://host:port``: token families in Redis Cluster (extra ``auth-refresh[redis]``),
through redis-py's cluster client (``redis.asyncio.cluster.RedisCluster``) and, for the
single-slot scripts of a step, a plain client of each master (``redis_cluster_masters``).

The URL names one or more seed nodes (``redis-cluster://a:6379,b:6379``), credentials as in
``redis://`` URLs, and ``rediss-cluster://`` connects with TLS; the client finds the rest of the
cluster from them. ``socket_timeout`` and ``socket_connect_timeout`` in the query override the
defaults (1 s and 0.5 s).

Every script touches one slot. A family is one hash whose hash tag is its id,
``auth-refresh:{f:<family>}``, so a refresh, which knows only the family, is one ``EVALSHA`` on
that slot's primary, through the store's own client of it: one round trip or a share of one
(the scripts an event loop asks of a master while a pipeline to it is under way go together in
the next), atomic there. A subject's index (its sessions in list order, and the family of each)
is under the subject's tag, ``auth-refresh:{s:<subject>}:...``, in another slot, so the steps
that need both are single-slot steps, a fixed number of them whatever the count, ordered so
that nothing is missed; "one step" for the cluster is one such sequence, each of its rounds one
pipeline with one write per node:

- a login adds the family to its subject's index first, then creates the family; when the
  index holds more than the cap, one round reads the other families, one revokes the least
  recently refreshed beyond the cap, and one takes them and the index's dead families out;
- ``revoke_subject`` and ``revoke_other_sessions`` read the index, revoke its families in one
  round and take them out of the index. A family the index names but that does not exist yet
  (a login between its two steps) gets a revoked tombstone, which its creation keeps: a login
  racing the revoke is either revoked or started after it;
- listing reads a page of the index, then its families in one round (more pages while some
  were not live sessions: at most the page plus the cap), and takes the dead ones out.

A family revoked by itself (a logout, ``revoke_session``, reuse) leaves the index at the next of
those steps: a login over the cap reads at most the cap and one more, so no index grows past
the cap plus the logins under way.

A family's hash also holds the session it is (``sid``, ``refreshed_at``, ``ua``, ``ip``), and
``auth-refresh:{v:<session id>}`` names a session's family, in the session id's slot: finding a
session is two single-slot steps, the session's key, then its family.

At its first step the store checks every master's ``maxmemory-policy`` (``CONFIG GET``, or
``INFO memory`` where ``CONFIG`` is disabled): an evicting one is refused, one that cannot be
read is a WARNING.

The layout's version is the key ``auth-refresh:schema``, written by the first store to use the
cluster; a newer version is refused with ``ConfigurationError``, an older one migrated
(``redis_cluster_migration``; ``auth-refresh store migrate`` does it with no step deadline).

When a primary is down, the steps on its slots fail with ``StoreUnavailableError`` within the
step deadline (1.5 s) and the other slots keep working. The cluster client reads the layout
again after its own errors (a master's plain client that fails has it ask that master too) and
follows moved slots: the store recovers on its own once the node is back or a replica took over.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
import weakref
from collections.abc import Awaitable
from typing import Any, TypeVar, cast

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from auth_refresh.exceptions import StoreUnavailableError
from auth_refresh.stores.redis_checks import check_eviction_policy, newer_layout
from auth_refresh.stores.redis_clock import ServerClocks, TimeReader
from auth_refresh.stores.redis_cluster_layout import (
    CHECK_LAYOUT,
    END_SESSION,
    INDEX_FAMILY,
    INDEXED_PAGE,
    LAYOUT_VERSION,
    UNINDEX,
    ClusterKeys,
)
from auth_refresh.stores.redis_cluster_masters import CUT_OFF, REDIRECTS, Masters
from auth_refresh.stores.redis_cluster_migration import migrate_cluster
from auth_refresh.stores.redis_cluster_url import cluster_client
from auth_refresh.stores.redis_core import (
    KEY_PREFIX,
    MISTAKES,
    UNAVAILABLE,
    RedisStoreCore,
    ScriptCall,
    deadline_argument,
    failing_as_unavailable,
    number,
    run_scripts,
    store_log,
    unavailable,
)
from auth_refresh.stores.redis_scripts import LIST_SESSIONS, Script, created_at_of, layout_script

__all__ = ["RedisClusterRefreshTokenStore"]

# How long a tombstone waits for the login that revoke_subject saw half done; an indexed family
# that does not exist is a login half done for as long, then an expired family.
TOMBSTONE_SECONDS = 60
# The most members one step takes out of an index (Lua's unpack has a limit).
FORGET_BATCH = 500
# What a login over the cap reads of each other family.
CAP_FIELDS = ("subject", "created_at", "refreshed_at", "expires_at", "revoked")

T = TypeVar("T")


class RedisClusterRefreshTokenStore(RedisStoreCore[ClusterKeys]):
    """Families in Redis Cluster; each step one single-slot script."""

    def __init__(self, client: RedisCluster, *, key_prefix: str = KEY_PREFIX) -> None:
        super().__init__(ClusterKeys(key_prefix))
        self._client = client
        self._index_family = Script.of(INDEX_FAMILY, "index family")
        self._indexed_page = Script.of(INDEXED_PAGE, "read index")
        self._unindex = Script.of(UNINDEX, "unindex")
        self._list_sessions = layout_script(self.keys, LIST_SESSIONS, "list sessions")
        self._end_session = layout_script(self.keys, END_SESSION, "end session")
        self._found_cluster = False
        self._finding_cluster = asyncio.Lock()
        # Each master's clock, by node name: a script that writes is given its step's deadline
        # in the clock of the master that runs it.
        self._clocks = ServerClocks(self._time_readers)
        # Per event loop, each master's plain client: a master that fails fails its batch only.
        self._masters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Masters] = (
            weakref.WeakKeyDictionary()
        )

    @classmethod
    def from_url(cls, url: str) -> RedisClusterRefreshTokenStore:
        """A store over a new cluster client for ``url`` (``redis-cluster://host:port,...``)."""
        return cls(cluster_client(url))

    async def _index(
        self,
        subject: str,
        family_id: str,
        member: str,
        absolute_lifetime: float,
        max_sessions: int,
    ) -> Any:
        # The index first: a revoke_subject between this step and the family's leaves a
        # tombstone.
        args = [member, family_id, number(absolute_lifetime), str(max_sessions)]
        found = await self._run(self._index_family, self._index_keys(subject), args)
        return list(zip(found[::2], found[1::2], strict=True))

    async def _cap(
        self, subject: str, member: str, found: Any, *, now: float, max_sessions: int
    ) -> None:
        others: list[tuple[str, str]] = [pair for pair in found if pair[0] != member]
        fields = await self._step(
            self._read_families([family for _, family in others]), "read families"
        )
        live: list[tuple[float, str, str]] = []  # last activity, member, family
        dead: list[str] = []
        for (other, family_id), values in zip(others, fields, strict=True):
            record = dict(zip(CAP_FIELDS, values, strict=True))
            if record["subject"] is None:
                created_at = created_at_of(other)
                if now - created_at < TOMBSTONE_SECONDS:
                    live.append((created_at, other, family_id))  # a login half done
                else:
                    dead.append(other)
            elif record["revoked"] == "1" or now >= float(record["expires_at"]):
                dead.append(other)
            else:
                active = float(record["refreshed_at"] or record["created_at"])
                live.append((active, other, family_id))
        live.sort()
        evicted = live[: max(0, len(live) + 1 - max_sessions)]
        if evicted:
            calls = [self._ending(family_id, now, "") for _, _, family_id in evicted]
            await self._step(self._scripts(calls), "revoke sessions over the cap")
        await self._forget(subject, dead + [other for _, other, _ in evicted])

    async def _name_session(self, session_id: str, family_id: str, until: float) -> None:
        # For as long as the family can live: its own slot, written last (a session not found
        # yet is a login not done yet).
        until_ms = str(math.ceil(until * 1000))
        session = self.keys.session(session_id)
        naming = self._command("SET", session, family_id, "PXAT", until_ms)
        await self._step(naming, "name session", session)

    async def revoke_subject(self, subject: str, *, now: float) -> int:
        return await self._end_sessions(subject, None, now)

    async def revoke_other_sessions(self, subject: str, keep: str | None, *, now: float) -> int:
        return await self._end_sessions(subject, keep, now)

    async def _end_sessions(self, subject: str, keep: str | None, now: float) -> int:
        index = self.keys.index(subject)
        indexed = await self._step(self._hgetall(index), "read index", index)
        if not indexed:
            return 0
        members = list(indexed)
        calls = [self._ending(indexed[member], now, keep or "") for member in members]
        answers = await self._step(self._scripts(calls), "end sessions")
        await self._forget(
            subject, [m for m, answer in zip(members, answers, strict=True) if answer != "kept"]
        )
        return sum(answer == "ended" for answer in answers)

    async def _session_entry(self, session_id: str) -> str | None:
        # The session's key is in another slot than its family's: a step of its own.
        session = self.keys.session(session_id)
        family_id = await self._step(self._command("GET", session), "find session", session)
        return None if family_id is None else self.keys.family(family_id)

    async def _session_rows(self, subject: str, now: float, limit: int, after: str) -> list[Any]:
        rows: list[Any] = []
        dead: list[str] = []
        while len(rows) < limit:
            want = limit - len(rows)
            page = [after, str(want)]
            members, families = await self._run(self._indexed_page, self._index_keys(subject), page)
            args = [number(now), subject]
            calls = [(self._list_sessions, [self.keys.family(f or "")], args) for f in families]
            rows_found = await self._step(self._scripts(calls), "list sessions")
            for member, family_id, row in zip(members, families, rows_found, strict=True):
                if row:
                    rows.append(row)
                elif (
                    family_id is None
                    or row == []
                    or now - created_at_of(member) >= TOMBSTONE_SECONDS
                ):
                    dead.append(member)
            if len(members) < want:
                break
            after = members[-1]
        await self._forget(subject, dead)
        return rows

    def _index_keys(self, subject: str) -> list[str]:
        return [self.keys.sessions(subject), self.keys.index(subject)]

    def _ending(self, family_id: str, now: float, keep: str) -> ScriptCall:
        args = [number(now), keep, str(TOMBSTONE_SECONDS)]
        return (self._end_session, [self.keys.family(family_id)], args)

    async def _forget(self, subject: str, members: list[str]) -> None:
        """``members`` leave the subject's index (a step per ``FORGET_BATCH``), if any."""
        for start in range(0, len(members), FORGET_BATCH):
            batch = members[start : start + FORGET_BATCH]
            await self._run(self._unindex, self._index_keys(subject), batch)

    async def close(self) -> None:
        await self._clocks.close()
        # This loop's plain clients; another loop's go with its loop.
        masters = self._masters.pop(asyncio.get_running_loop(), None)
        if masters is not None:
            await masters.close()
        with contextlib.suppress(RedisError, OSError):  # a socket slow to close: no error
            await self._client.aclose()

    async def migrate(self) -> int:
        """Find the cluster, check it and migrate the layout now (the first step would); its
        version. No step deadline: a large migration takes as long as it takes."""
        doing = functools.partial(self._doing, "migrate", None)
        async with failing_as_unavailable("Redis Cluster", None, doing):
            await self._find_cluster()
            return int(cast(str, await self._client.get(self.keys.schema)))

    async def exists(self) -> bool:
        return bool(await self._step(self._client.exists(self.keys.schema), "find the store"))

    async def _run(
        self, script: Script, keys: list[str], args: list[str], *, refuse_late: bool = False
    ) -> Any:
        # Plain try/except and the batch's timer, not a context manager and a timer per step:
        # this is every refresh's path.
        deadline = asyncio.get_running_loop().time() + self.step_deadline
        try:
            if not self._found_cluster:
                async with asyncio.timeout_at(deadline):
                    await self._find_cluster()
            # A primary: None is only for a replica asked for.
            node = cast(ClusterNode, self._client.get_node_from_key(keys[0]))
            if refuse_late:
                # In the clock of the master that runs the script.
                gives_up_at = time.monotonic() + self.step_deadline
                args = [*args, deadline_argument(self._clocks.deadline(node.name, gives_up_at))]
            masters, call = self._masters_of_this_loop(), (script, keys, args)
            try:
                return await masters.batches(node).submit(call, deadline)
            except REDIRECTS:
                return await masters.redirected(call, deadline)
            except CUT_OFF:
                # The cluster client reads the layout again only after errors of its own.
                masters.cut_off(node)
                raise
        except MISTAKES:
            raise
        except (*UNAVAILABLE, AttributeError) as error:
            raise self._failed(error, script.name, keys[0]) from None

    def _masters_of_this_loop(self) -> Masters:
        # A connection belongs to the event loop that opened it: plain clients per loop.
        loop = asyncio.get_running_loop()
        masters = self._masters.get(loop)
        if masters is None:
            masters = self._masters[loop] = Masters(self._client)
        return masters

    def _time_readers(self) -> dict[str, TimeReader]:
        return {
            node.name: functools.partial(self._client.time, target_nodes=node)
            for node in self._client.get_primaries()
        }

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

    async def _hgetall(self, key: str) -> dict[str, str]:
        await self._find_cluster()
        return cast(dict[str, str], await self._client.hgetall(key))

    async def _read_families(self, family_ids: list[str]) -> list[Any]:
        await self._find_cluster()
        pipe = self._client.pipeline()
        for family_id in family_ids:
            pipe.hmget(self.keys.family(family_id), CAP_FIELDS)
        return await pipe.execute() if family_ids else []

    async def _find_cluster(self) -> None:
        # redis-py's cluster client, sent many commands before it has found the cluster, can
        # fail some of them (it opens connections while it replaces them): the first step
        # finds the cluster alone, through the client's public initialize(), and checks the
        # layout's version.
        if not self._found_cluster:
            async with self._finding_cluster:
                if not self._found_cluster:
                    await self._client.initialize()
                    await self._check_policies()
                    await self._check_layout()
                    await self._clocks.read()
                    self._found_cluster = True

    async def _check_layout(self) -> None:
        # One round trip: written if no store has yet, and the version found.
        found = await self._client.eval(CHECK_LAYOUT, 1, self.keys.schema, LAYOUT_VERSION)
        version = int(cast(str, found))
        if version > LAYOUT_VERSION:
            raise newer_layout("Redis Cluster store", version, LAYOUT_VERSION, "another cluster")
        if version < LAYOUT_VERSION:
            await migrate_cluster(self._client, self.keys)
            await self._client.set(self.keys.schema, LAYOUT_VERSION)

    async def _check_policies(self) -> None:
        # Every master: each holds some families and indexes.
        for node in self._client.get_primaries():
            await check_eviction_policy(
                f"master {node.name}",
                functools.partial(self._client.config_get, "maxmemory-policy", target_nodes=node),
                functools.partial(self._client.info, "memory", target_nodes=node),
            )

    async def _step(self, work: Awaitable[T], operation: str, key: str | None = None) -> T:
        try:
            async with asyncio.timeout(self.step_deadline):
                return await work
        except MISTAKES:
            raise
        except (*UNAVAILABLE, AttributeError) as error:
            raise self._failed(error, operation, key) from None

    def _failed(
        self, error: BaseException, operation: str, key: str | None
    ) -> StoreUnavailableError:
        doing = functools.partial(self._doing, operation, key)
        if isinstance(error, AttributeError):
            # redis-py 8.1's cluster client, after a timeout under load, can hand a command a
            # connection it has just closed ('NoneType' has no attribute 'writelines'): the
            # step failed before it reached Redis, so this is a 503, not a 500.
            store_log.warning("Redis Cluster client error: %s: %s", doing(), error)
            return StoreUnavailableError()
        return unavailable("Redis Cluster", error, self.step_deadline, doing)

    def _doing(self, operation: str, key: str | None) -> str:
        """What a step did, and where, for a warning."""
        if key is None:
            return operation
        try:
            node = self._client.get_node_from_key(key)
        except RedisClusterException:
            node = None
        return f"{operation} on {node.name if node is not None else 'a master not known yet'}"
