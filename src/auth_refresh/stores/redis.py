"""``redis://host:port/db``: token families in Redis, shared by every host (extra
``auth-refresh[redis]``).

Each step is one Lua script (``auth_refresh.redis_layout``), atomic on the server. The steps an
event loop asks for while a write is under way go together in the next one: one pipeline of
``EVALSHA`` calls through redis-py's public API, one write and one read for the batch, so a
refresh costs one round trip or a share of one. The client has connect and socket timeouts
(0.5 s; a URL query such as ``?socket_timeout=0.2`` overrides them) and no retries, and every
step has a deadline: a dead or hung Redis gives ``StoreUnavailableError`` well within 2 s.
``rediss://`` URLs connect with TLS.

At its first step the store checks the server: an evicting ``maxmemory-policy`` would drop keys
the others rely on, so only ``noeviction`` is accepted (where ``CONFIG GET`` is allowed), and
the key layout is migrated to this release's version.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, cast

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.maint_notifications import MaintNotificationsConfig

from auth_refresh.exceptions import ConfigurationError, StoreUnavailableError
from auth_refresh.stores.base import (
    Rotation,
    RotationOutcome,
    SessionRecord,
    SessionStart,
    Successor,
)
from auth_refresh.stores.redis_layout import (
    LIST_SESSIONS,
    REVOKE_FAMILY,
    REVOKE_SESSION,
    REVOKE_SUBJECT,
    ROTATE,
    SESSION_ACTIVE,
    START_FAMILY,
    Keys,
    migrate,
)
from auth_refresh.types import TokenPair

__all__ = ["RedisRefreshTokenStore"]

# Defaults; the URL's query (socket_connect_timeout, socket_timeout) wins over them.
CONNECT_TIMEOUT_SECONDS = 0.5
SOCKET_TIMEOUT_SECONDS = 0.5
# The most one step may take, whatever the socket does: under the 2 s promised to clients.
STEP_DEADLINE_SECONDS = 1.5
KEY_PREFIX = "auth-refresh:"
# The one policy under which no key of a family, index or generation disappears early.
ACCEPTED_POLICY = "noeviction"

store_log = logging.getLogger("auth_refresh.store")

_Call = tuple[AsyncScript, list[str], list[str], "asyncio.Future[Any]"]


class RedisRefreshTokenStore:
    """Families in Redis; each step one Lua script, batched into pipelines."""

    def __init__(self, client: redis.Redis, *, key_prefix: str = KEY_PREFIX) -> None:
        self.client = client
        self.keys = Keys(key_prefix)
        self._start_family = client.register_script(START_FAMILY)
        self._rotate = client.register_script(ROTATE)
        self._revoke_family = client.register_script(REVOKE_FAMILY)
        self._revoke_subject = client.register_script(REVOKE_SUBJECT)
        self._session_active = client.register_script(SESSION_ACTIVE)
        self._list_sessions = client.register_script(LIST_SESSIONS)
        self._revoke_session = client.register_script(REVOKE_SESSION)
        # A connection belongs to the event loop that opened it: a client per loop.
        self._batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batches] = (
            weakref.WeakKeyDictionary()
        )
        self._checked = False
        # The loop the given client serves; other loops get clients of their own.
        self._client_loop: weakref.ref[asyncio.AbstractEventLoop] | None = None

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
        return cls(client)

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
        await self._call(
            self._start_family,
            [
                self.keys.family(family_id),
                self.keys.families(subject),
                self.keys.generation(subject),
                self.keys.session(session.session_id),
            ],
            [
                subject,
                _number(now),
                _number(expires_at),
                token_id,
                family_id,
                _number(absolute_lifetime),
                session.session_id,
                session.user_agent or "",
                session.client_ip or "",
            ],
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
        answer = await self._call(
            self._rotate,
            [self.keys.family(family_id)],
            [
                token_id,
                successor.token_id,
                json.dumps(successor.pair) if grace_seconds > 0 else "",
                _number(successor.expires_at),
                _number(now),
                _number(grace_seconds),
                _number(absolute_lifetime),
                self.keys.prefix,
                family_id,
            ],
        )
        outcome = RotationOutcome(answer[0])
        subject = answer[1] if len(answer) > 1 else None
        if outcome is RotationOutcome.ROTATED:
            return Rotation(outcome, subject, successor.pair)
        pair = cast(TokenPair, json.loads(answer[2])) if len(answer) > 2 else None
        return Rotation(outcome, subject, pair)

    async def revoke_family(self, family_id: str) -> None:
        await self._call(self._revoke_family, [self.keys.family(family_id)], [])

    async def revoke_subject(self, subject: str) -> None:
        await self._call(
            self._revoke_subject,
            [self.keys.families(subject), self.keys.generation(subject)],
            [],
        )

    async def session_active(self, session_id: str, *, now: float) -> bool:
        answer = await self._call(
            self._session_active,
            [self.keys.session(session_id)],
            [_number(now), self.keys.prefix],
        )
        return bool(answer)

    async def list_sessions(self, subject: str, *, now: float) -> list[SessionRecord]:
        rows = await self._call(
            self._list_sessions,
            [self.keys.families(subject), self.keys.generation(subject)],
            [_number(now), self.keys.prefix],
        )
        sessions = [
            SessionRecord(
                session_id=session_id,
                created_at=float(created_at),
                last_refreshed_at=float(refreshed_at or created_at),
                user_agent=agent or None,
                client_ip=ip or None,
            )
            for session_id, created_at, refreshed_at, agent, ip in rows
        ]
        return sorted(sessions, key=lambda session: session.created_at, reverse=True)

    async def revoke_session(self, subject: str, session_id: str, *, now: float) -> bool:
        answer = await self._call(
            self._revoke_session,
            [self.keys.session(session_id)],
            [_number(now), self.keys.prefix, subject],
        )
        return bool(answer)

    async def migrate(self) -> int:
        """Check the server and migrate the key layout now (the first step would); the layout's
        version. No step deadline: a large migration takes as long as it takes."""
        try:
            batches = self._batches_of_this_loop()
            await batches.checked(self._check_server)
            version = await batches.client.get(self.keys.schema)
            return int(version or 0)
        except (RedisError, OSError, TimeoutError) as error:
            store_log.warning("Redis store unavailable: %s: %s", type(error).__name__, error)
            raise StoreUnavailableError() from None

    async def close(self) -> None:
        # This loop's client; another loop's goes with its loop.
        loop = asyncio.get_running_loop()
        batches = self._batches.pop(loop, None)
        if batches is not None:
            # A pipeline still under way (its step gave up at its deadline) would reconnect
            # after the pool is closed and leave that socket open.
            await batches.finish()
            if batches.client is not self.client:
                await batches.client.aclose()
        if self._client_loop is None or self._client_loop() in (loop, None):
            await self.client.aclose()

    async def _call(self, script: AsyncScript, keys: list[str], args: list[str]) -> Any:
        try:
            async with asyncio.timeout(STEP_DEADLINE_SECONDS):
                batches = self._batches_of_this_loop()
                if not self._checked:
                    await batches.checked(self._check_server)
                return await batches.submit(script, keys, args)
        except (RedisError, OSError, TimeoutError) as error:
            store_log.warning("Redis store unavailable: %s: %s", type(error).__name__, error)
            raise StoreUnavailableError() from None

    async def _check_server(self, client: redis.Redis) -> None:
        try:
            policy = (await client.config_get("maxmemory-policy")).get("maxmemory-policy")
        except ResponseError as error:
            # CONFIG is often disabled on managed Redis: its operator answers for the policy.
            store_log.info("Redis store: maxmemory-policy not readable: %s", error)
            policy = None
        if policy is not None and policy != ACCEPTED_POLICY:
            raise ConfigurationError(
                f"the Redis store needs maxmemory-policy {ACCEPTED_POLICY}; this server's is "
                f"{policy}, under which it may evict a subject's index or generation and let "
                "revoked sessions live on"
            )
        await migrate(client, self.keys)
        self._checked = True

    def _batches_of_this_loop(self) -> _Batches:
        loop = asyncio.get_running_loop()
        batches = self._batches.get(loop)
        if batches is None:
            if self._client_loop is None:
                self._client_loop = weakref.ref(loop)
            client = self.client if self._client_loop() is loop else _same_client(self.client)
            batches = self._batches[loop] = _Batches(client)
        return batches


class _Batches:
    """One event loop's steps: those asked for while a pipeline is under way go in the next."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._waiting: list[_Call] = []
        self._sending: asyncio.Task[None] | None = None
        self._checking: asyncio.Task[None] | None = None

    async def checked(self, check: Callable[[redis.Redis], Coroutine[Any, Any, None]]) -> None:
        """``check(client)`` done once for the steps that wait for it together."""
        if self._checking is None or self._checking.done():
            self._checking = asyncio.get_running_loop().create_task(check(self.client))
            self._checking.add_done_callback(_retrieve)
        # Shielded: one step's deadline does not cancel the check the others wait for.
        await asyncio.shield(self._checking)

    async def finish(self) -> None:
        """Wait for the check and pipeline under way; the client's timeouts bound them."""
        for task in (self._checking, self._sending):
            if task is not None and not task.done():
                await asyncio.wait([task])

    def submit(self, script: AsyncScript, keys: list[str], args: list[str]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        self._waiting.append((script, keys, args, answer))
        if self._sending is None:
            self._sending = loop.create_task(self._send_all())
        return answer

    async def _send_all(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    await self._send(batch)
                except (RedisError, OSError, TimeoutError) as error:
                    for *_, answer in batch:
                        if not answer.done():
                            answer.set_exception(error)
        finally:
            self._sending = None

    async def _send(self, batch: list[_Call]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for script, keys, args, _ in batch:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            replies = await pipe.execute(raise_on_error=False)
            lost = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if lost:
                # The server lost its script cache (a restart, SCRIPT FLUSH): EVAL loads them.
                for i in lost:
                    script, keys, args, _ = batch[i]
                    pipe.eval(str(script.script), len(keys), *keys, *args)
                for i, reply in zip(lost, await pipe.execute(raise_on_error=False), strict=True):
                    replies[i] = reply
        for (*_, answer), reply in zip(batch, replies, strict=True):
            if answer.done():
                continue  # a step that gave up (its deadline) has its reply skipped
            if isinstance(reply, Exception):
                answer.set_exception(reply)
            else:
                answer.set_result(reply)


def _retrieve(task: asyncio.Task[None]) -> None:
    # Each waiting step raised the error itself; the task's own copy is not "never retrieved".
    if not task.cancelled():
        task.exception()


def _same_client(client: redis.Redis) -> redis.Redis:
    # Another loop's client, with the same connection settings (host, TLS, timeouts).
    pool = client.connection_pool
    return redis.Redis(
        connection_pool=redis.ConnectionPool(
            connection_class=pool.connection_class, **pool.connection_kwargs
        )
    )


def _number(value: float) -> str:
    # repr is the shortest string that reads back as the same double, in Python and in Lua.
    return repr(float(value))
