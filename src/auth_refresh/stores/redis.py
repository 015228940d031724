"""``redis://host:port/db``: token families in Redis, shared by every host (extra
``auth-refresh[redis]``).

Each step is one Lua script (``redis_scripts`` over ``redis_layout``'s keys), atomic on the
server. The steps an event loop asks for while a write is under way go together in the next
one: one pipeline of ``EVALSHA`` calls through redis-py's public API, one write and one read for
the batch, so a refresh costs one round trip or a share of one. Every step has a deadline
(``step_deadline``, 1.5 s; a batch past it is cancelled and its connection dropped): a dead or
hung Redis gives ``StoreUnavailableError`` well within 2 s. The client has connect and socket
timeouts (0.5 s; a URL query such as ``?socket_timeout=0.2`` overrides them) and retries once
at once on a broken connection; steps read through a client of their own with no socket
timeout (their deadline bounds them) unless the URL sets one. ``rediss://`` URLs connect with
TLS.

A login's and a rotation's script is given that deadline in the server's time (``redis_clock``:
the server's ``TIME`` is read at the first step, then every minute in the background) and
writes nothing if Redis runs it later, as a hung Redis that wakes up does with the steps that
gave up meanwhile: their clients were answered 503, and retry.

At its first step the store checks the server: an evicting ``maxmemory-policy`` would drop keys
the others rely on, so only ``noeviction`` is accepted (read with ``CONFIG GET``, or from
``INFO memory`` where ``CONFIG`` is disabled; a policy neither shows is a WARNING), and the key
layout is migrated to this release's version (``redis_migration``).

A subject's sessions are capped (``max_sessions``) and its index holds no revoked or expired
family after a login, so listing a page, ``revoke_other_sessions`` and ``revoke_subject`` are
each one script that walks at most the page plus the cap.
"""

from __future__ import annotations

import asyncio
import functools
import time
import urllib.parse
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.maint_notifications import MaintNotificationsConfig

from auth_refresh.exceptions import ConfigurationError
from auth_refresh.stores.redis_batches import ScriptBatches
from auth_refresh.stores.redis_checks import check_eviction_policy
from auth_refresh.stores.redis_clock import ServerClock
from auth_refresh.stores.redis_core import (
    CONNECT_TIMEOUT_SECONDS,
    KEY_PREFIX,
    MISTAKES,
    STEP_DEADLINE_SECONDS,
    UNAVAILABLE,
    RedisStoreCore,
    deadline_argument,
    failing_as_unavailable,
    number,
    store_log,
    unavailable,
)
from auth_refresh.stores.redis_layout import END_SESSIONS, LIST_PAGE, Keys
from auth_refresh.stores.redis_migration import migrate
from auth_refresh.stores.redis_scripts import Script, layout_script

__all__ = ["RedisRefreshTokenStore"]

# Defaults; the URL's query (socket_connect_timeout, socket_timeout) wins over them.
SOCKET_TIMEOUT_SECONDS = 0.5


class RedisRefreshTokenStore(RedisStoreCore[Keys]):
    """Families in Redis; each step one Lua script, batched into pipelines."""

    def __init__(self, client: redis.Redis, *, key_prefix: str = KEY_PREFIX) -> None:
        super().__init__(Keys(key_prefix))
        self.client = client
        self._list_page = layout_script(self.keys, LIST_PAGE, "list sessions")
        self._end_sessions = layout_script(self.keys, END_SESSIONS, "end sessions")
        # A connection belongs to the event loop that opened it: a client per loop.
        self._batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batches] = (
            weakref.WeakKeyDictionary()
        )
        self._checked = False
        self._clock = ServerClock()
        # The loop the given client serves; other loops get clients of their own.
        self._client_loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        # Whether steps go through a client of their own that reads with no socket timeout
        # (from_url, unless the URL sets one): the step's deadline bounds its batch, and a
        # timer per reply cost a refresh about 16 µs (measured).
        self._steps_untimed = False

    @classmethod
    def from_url(cls, url: str) -> RedisRefreshTokenStore:
        """A store over a new client for ``url`` (``redis://host:port/db``)."""
        try:
            client = redis.Redis.from_url(
                url,
                decode_responses=True,
                # One retry at once on a broken connection (a reset while idle), none after a
                # timeout: that would double the wait on a hung server. A step Redis ran
                # whose reply was lost runs twice: a rotation's repeat is then answered as one
                # within the grace window (with none, as reuse).
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
                socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                socket_timeout=SOCKET_TIMEOUT_SECONDS,
                # Off, or the pool skips its check of a connection the server closed while
                # idle ("auto" counts as on), and the next step fails on it.
                maint_notifications_config=MaintNotificationsConfig(enabled=False),
            )
        except ValueError as error:
            raise ConfigurationError(f"not a usable Redis URL: {error}") from None
        store = cls(client)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
        store._steps_untimed = "socket_timeout" not in query
        return store

    async def revoke_subject(self, subject: str, *, now: float) -> int:
        ended: int = await self._run(self._end_sessions, [], [number(now), subject, "", "1"])
        return ended

    async def revoke_other_sessions(self, subject: str, keep: str | None, *, now: float) -> int:
        args = [number(now), subject, keep or "", ""]
        ended: int = await self._run(self._end_sessions, [], args)
        return ended

    async def _session_rows(self, subject: str, now: float, limit: int, after: str) -> list[Any]:
        rows: list[Any] = await self._run(
            self._list_page, [], [number(now), subject, str(limit), after]
        )
        return rows

    async def migrate(self) -> int:
        """Check the server and migrate the key layout now (the first step would); the layout's
        version. No step deadline: a large migration takes as long as it takes."""
        async with failing_as_unavailable("Redis store", None, lambda: self._doing("migrate")):
            batches = self._batches_of_this_loop()
            await batches.checked(self._check_server)
            version = await batches.client.get(self.keys.schema)
            return int(version or 0)

    async def exists(self) -> bool:
        doing = functools.partial(self._doing, "find the store")
        async with failing_as_unavailable("Redis store", self.step_deadline, doing):
            return bool(await self._batches_of_this_loop().client.exists(self.keys.schema))

    async def close(self) -> None:
        # This loop's client; another loop's goes with its loop.
        loop = asyncio.get_running_loop()
        batches = self._batches.pop(loop, None)
        if batches is not None:
            # A pipeline still under way (its step gave up at its deadline) would reconnect
            # after the pool is closed and leave that socket open.
            await batches.finish()
            if batches.steps is not batches.client:
                await batches.steps.aclose()
            if batches.client is not self.client:
                await batches.client.aclose()
        if self._client_loop is None or self._client_loop() in (loop, None):
            await self.client.aclose()

    async def _run(
        self, script: Script, keys: list[str], args: list[str], *, refuse_late: bool = False
    ) -> Any:
        # Plain try/except and the batch's timer, not a context manager and a timer per step:
        # this is every refresh's path (about 30 µs less, measured).
        deadline = asyncio.get_running_loop().time() + self.step_deadline
        try:
            batches = self._batches_of_this_loop()
            if not self._checked:
                async with asyncio.timeout_at(deadline):
                    await batches.checked(self._check_server)
            if self._clock.due():
                batches.read_clock(self._clock)
            if refuse_late:
                gives_up_at = time.monotonic() + self.step_deadline
                args = [*args, deadline_argument(self._clock.deadline(gives_up_at))]
            return await batches.submit((script, keys, args), deadline)
        except MISTAKES:
            raise
        except UNAVAILABLE as error:
            doing = functools.partial(self._doing, script.name)
            raise unavailable("Redis store", error, self.step_deadline, doing) from None

    def _doing(self, operation: str) -> str:
        server = self.client.connection_pool.connection_kwargs
        where = server.get("path") or f"{server.get('host')}:{server.get('port')}"
        return f"{operation} on {where}"

    async def _check_server(self, client: redis.Redis) -> None:
        await check_eviction_policy(
            "this server",
            lambda: client.config_get("maxmemory-policy"),
            lambda: client.info("memory"),
        )
        await migrate(client, self.keys)
        await self._clock.read(client.time)
        self._checked = True

    def _batches_of_this_loop(self) -> _Batches:
        loop = asyncio.get_running_loop()
        batches = self._batches.get(loop)
        if batches is None:
            if self._client_loop is None:
                self._client_loop = weakref.ref(loop)
            client = self.client if self._client_loop() is loop else _same_client(self.client)
            steps = _same_client(client, socket_timeout=None) if self._steps_untimed else client
            batches = self._batches[loop] = _Batches(client, steps)
        return batches


class _Batches(ScriptBatches):
    """One event loop's steps, sent through ``steps``: those asked for while a pipeline is
    under way go in the next; the server's check and clock readings, through ``client``, made
    once for the steps that wait for them."""

    def __init__(self, client: redis.Redis, steps: redis.Redis) -> None:
        super().__init__(functools.partial(steps.pipeline, transaction=False))
        self.client = client
        self.steps = steps
        self._checking: asyncio.Task[None] | None = None
        self._reading: asyncio.Task[None] | None = None

    async def checked(self, check: Callable[[redis.Redis], Coroutine[Any, Any, None]]) -> None:
        """``check(client)`` done once for the steps that wait for it together."""
        if self._checking is None or self._checking.done():
            self._checking = asyncio.get_running_loop().create_task(check(self.client))
            self._checking.add_done_callback(_retrieve)
        # Shielded: one step's deadline does not cancel the check the others wait for.
        await asyncio.shield(self._checking)

    def read_clock(self, clock: ServerClock) -> None:
        """Read the server's clock in the background, unless a reading is under way."""
        if self._reading is None or self._reading.done():
            self._reading = asyncio.get_running_loop().create_task(self._read(clock))

    async def _read(self, clock: ServerClock) -> None:
        try:
            async with asyncio.timeout(STEP_DEADLINE_SECONDS):
                await clock.read(self.client.time)
        except (RedisError, OSError, TimeoutError) as error:
            # The next reading is due in a minute; meanwhile the last one serves.
            store_log.info("Redis store: its clock was not read: %s", type(error).__name__)

    async def finish(self) -> None:
        """Wait for the check, reading and pipeline under way; timeouts bound them."""
        for task in (self._checking, self._reading):
            if task is not None and not task.done():
                await asyncio.wait([task])
        await super().finish()


def _retrieve(task: asyncio.Task[None]) -> None:
    # Each waiting step raised the error itself; the task's own copy is not "never retrieved".
    if not task.cancelled():
        task.exception()


def _same_client(client: redis.Redis, **changed: Any) -> redis.Redis:
    # Another client with the same connection settings (host, TLS, timeouts), but ``changed``;
    # from_pool: its aclose() closes the pool's connections too.
    pool = client.connection_pool
    return redis.Redis.from_pool(
        redis.ConnectionPool(
            connection_class=pool.connection_class, **{**pool.connection_kwargs, **changed}
        )
    )
