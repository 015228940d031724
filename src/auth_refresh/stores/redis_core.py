"""What the Redis and Redis Cluster stores do alike: each step's script over the store's key
layout (``redis_scripts``), its arguments and the decoding of its answer, running scripts by
SHA with a fallback for a server that does not have them, and Redis's failures as
``StoreUnavailableError``.

A login and a rotation carry their step's deadline, written in the server's time
(``redis_clock``): the server refuses to run them after it (``redis_scripts.LATE``), so a step
answered 503 never takes effect later.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar, cast

import redis.asyncio as redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import (
    ClusterCrossSlotError,
    CrossSlotTransactionError,
    DataError,
    InvalidPipelineStack,
    NoScriptError,
    RedisClusterException,
    RedisError,
)

from auth_refresh.exceptions import StoreUnavailableError
from auth_refresh.stores.base import (
    SESSION_PAGE_MAX,
    Rotation,
    RotationOutcome,
    SessionCursor,
    SessionRecord,
    SessionStart,
    Successor,
)
from auth_refresh.stores.redis_scripts import (
    LATE,
    REVOKE_FAMILY,
    REVOKE_SESSION,
    ROTATE,
    SESSION_ACTIVE,
    START_FAMILY,
    KeyLayout,
    Script,
    layout_script,
    list_member,
)
from auth_refresh.types import TokenPair

__all__ = [
    "CONNECT_TIMEOUT_SECONDS",
    "KEY_PREFIX",
    "MISTAKES",
    "STEP_DEADLINE_SECONDS",
    "UNAVAILABLE",
    "RedisStoreCore",
    "ScriptCall",
    "deadline_argument",
    "failing_as_unavailable",
    "number",
    "run_script",
    "run_scripts",
    "store_log",
    "unavailable",
]

CONNECT_TIMEOUT_SECONDS = 0.5
# The most one step may take, whatever the socket does: under the 2 s promised to clients.
STEP_DEADLINE_SECONDS = 1.5
KEY_PREFIX = "auth-refresh:"

store_log = logging.getLogger("auth_refresh.store")
# A DPoP proof's key, set only if absent, expiring with the proof's window (ProofReplayCache).
FIRST_USE = Script.of(
    "if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 1 end\nreturn 0",
    "first use of a DPoP proof",
)

# redis-py's errors that mean "not now" (down, hung, loading, full, read-only after a failover,
# no master for a slot, a connection cut mid-reply, every cluster node unreachable) are a 503;
# these mean a mistake of ours (arguments, keys of several slots), and stay visible.
MISTAKES = (ClusterCrossSlotError, CrossSlotTransactionError, DataError, InvalidPipelineStack)
UNAVAILABLE = (RedisError, RedisClusterException, OSError, TimeoutError)

LayoutT = TypeVar("LayoutT", bound=KeyLayout)
ScriptCall = tuple[Script, list[str], list[str]]


class RedisStoreCore(ABC, Generic[LayoutT]):
    """The store steps over ``keys``'s scripts. A subclass runs a script as one step
    (``_run``); the other hooks are where a layout whose keys lie in several slots takes
    more than one step."""

    def __init__(self, keys: LayoutT) -> None:
        self.keys = keys
        # The most one step may take before it is a StoreUnavailableError.
        self.step_deadline = STEP_DEADLINE_SECONDS
        self._start_family = layout_script(keys, START_FAMILY, "start family")
        self._rotate = layout_script(keys, ROTATE, "rotate")
        self._revoke_family = layout_script(keys, REVOKE_FAMILY, "revoke family")
        self._session_active = layout_script(keys, SESSION_ACTIVE, "session active")
        self._revoke_session = layout_script(keys, REVOKE_SESSION, "revoke session")

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
        max_sessions: int,
    ) -> None:
        expires_at = min(token_expires_at, now + absolute_lifetime)
        member = list_member(now, session.session_id)
        over_cap = await self._index(subject, family_id, member, absolute_lifetime, max_sessions)
        answer = await self._run(
            self._start_family,
            [self.keys.family(family_id)],
            [
                subject,
                number(now),
                number(expires_at),
                token_id,
                family_id,
                number(absolute_lifetime),
                session.session_id,
                session.user_agent or "",
                session.client_ip or "",
                member,
                str(max_sessions),
            ],
            refuse_late=True,
        )
        if answer == LATE:
            raise _late("a login")
        await self._name_session(session.session_id, family_id, now + absolute_lifetime)
        if over_cap:
            await self._cap(subject, member, over_cap, now=now, max_sessions=max_sessions)

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
        answer = await self._run(
            self._rotate,
            [self.keys.family(family_id)],
            [
                token_id,
                successor.token_id,
                json.dumps(successor.pair) if grace_seconds > 0 else "",
                number(successor.expires_at),
                number(now),
                number(grace_seconds),
                number(absolute_lifetime),
                family_id,
            ],
            refuse_late=True,
        )
        if answer == LATE:
            raise _late("a rotation")
        outcome = RotationOutcome(answer[0])
        subject = answer[1] if len(answer) > 1 else None
        if outcome is RotationOutcome.ROTATED:
            return Rotation(outcome, subject, successor.pair)
        pair = cast(TokenPair, json.loads(answer[2])) if len(answer) > 2 else None
        return Rotation(outcome, subject, pair)

    async def revoke_family(self, family_id: str) -> None:
        await self._run(self._revoke_family, [self.keys.family(family_id)], [""])

    async def session_active(self, session_id: str, *, now: float) -> bool:
        key = await self._session_entry(session_id)
        if key is None:
            return False
        return bool(await self._run(self._session_active, [key], [number(now), session_id]))

    async def list_sessions(
        self, subject: str, *, now: float, limit: int, after: SessionCursor | None = None
    ) -> list[SessionRecord]:
        start = "" if after is None else list_member(after.created_at, after.session_id)
        rows = await self._session_rows(subject, now, min(limit, SESSION_PAGE_MAX), start)
        return [
            SessionRecord(
                session_id=session_id,
                created_at=float(created_at),
                last_refreshed_at=float(refreshed_at or created_at),
                user_agent=agent or None,
                client_ip=ip or None,
            )
            for session_id, created_at, refreshed_at, agent, ip in rows
        ]

    async def revoke_session(self, subject: str, session_id: str, *, now: float) -> bool:
        key = await self._session_entry(session_id)
        if key is None:
            return False
        args = [number(now), session_id, subject]
        return bool(await self._run(self._revoke_session, [key], args))

    @abstractmethod
    async def exists(self) -> bool:
        """Whether a store is there: its layout's key (``<prefix>schema``), which the first step
        writes, read without writing it, so that a tool that only reads (the CLI's ``sessions
        list``) creates no store where there is none. Every released layout has that key."""

    @abstractmethod
    async def _run(
        self, script: Script, keys: list[str], args: list[str], *, refuse_late: bool = False
    ) -> Any:
        """``script``'s answer, as one step; with ``refuse_late``, the step's deadline in the
        server's time (``deadline_argument``) is its last argument."""

    async def first_use(self, key: str, *, expires_at: float, now: float) -> bool:
        """``ProofReplayCache``: a key of its own under the prefix, expiring with the proof."""
        milliseconds = max(1, math.ceil((expires_at - now) * 1000))
        answer = await self._run(FIRST_USE, [f"{self.keys.prefix}proof:{key}"], [str(milliseconds)])
        return bool(answer)

    async def _index(
        self,
        subject: str,
        family_id: str,
        member: str,
        absolute_lifetime: float,
        max_sessions: int,
    ) -> Any:
        """Before a family starts: by default its script indexes it and keeps the cap. What
        it answers, if anything, is for ``_cap`` after the family started."""
        return None

    async def _cap(
        self, subject: str, member: str, found: Any, *, now: float, max_sessions: int
    ) -> None:
        """After a family started, with what ``_index`` found: by default nothing (the
        family's script kept the cap)."""

    async def _name_session(self, session_id: str, family_id: str, until: float) -> None:
        """After a family started: by default its script named its session."""

    async def _session_entry(self, session_id: str) -> str | None:
        """The key a session step is given (None: no such session); by default the session's
        own, which the script follows to its family."""
        return self.keys.session(session_id)

    @abstractmethod
    async def _session_rows(self, subject: str, now: float, limit: int, after: str) -> list[Any]:
        """At most ``limit`` rows (sid, created_at, refreshed_at, user agent, ip, '' for none)
        of the live sessions of ``subject`` in list order, after the member ``after``."""


async def run_scripts(pipe: Pipeline | ClusterPipeline, calls: Sequence[ScriptCall]) -> list[Any]:
    """Each call's answer, or the error it got, in order, through ``pipe``."""
    replies: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    load: set[str] = set()  # the scripts whose next call is sent whole
    while todo:
        for i in todo:
            script, keys, args = calls[i]
            if script.sha in load:
                load.discard(script.sha)
                pipe.eval(script.text, len(keys), *keys, *args)
            else:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
        for i, reply in zip(todo, await pipe.execute(raise_on_error=False), strict=True):
            replies[i] = reply
        # The server lost its script cache (a restart, SCRIPT FLUSH), or a cluster node never
        # ran the script: its first call is sent whole, caching it before the calls after it
        # run (one server runs a pipeline in order); a node that still lacks it, next round.
        todo = [i for i in todo if isinstance(replies[i], NoScriptError)]
        load = {calls[i][0].sha for i in todo}
    return replies


async def run_script(client: redis.Redis | RedisCluster, call: ScriptCall) -> Any:
    """One call's answer, straight through ``client``."""
    script, keys, args = call
    try:
        return await client.evalsha(script.sha, len(keys), *keys, *args)
    except NoScriptError:
        # As in run_scripts.
        return await client.eval(script.text, len(keys), *keys, *args)


@asynccontextmanager
async def failing_as_unavailable(
    what: str,
    deadline: float | None = STEP_DEADLINE_SECONDS,
    doing: Callable[[], str] = lambda: "a step",
) -> AsyncIterator[None]:
    """A step of at most ``deadline`` seconds; Redis's failures and the deadline logged (with
    ``doing()``: the operation, and the server where it is known) and raised as
    ``StoreUnavailableError``, never a guess."""
    try:
        async with asyncio.timeout(deadline):
            yield
    except MISTAKES:
        raise
    except UNAVAILABLE as error:
        raise unavailable(what, error, deadline, doing) from None


def unavailable(
    what: str, error: BaseException, deadline: float | None, doing: Callable[[], str]
) -> StoreUnavailableError:
    """The ``StoreUnavailableError`` for one of Redis's failures (``UNAVAILABLE``), logged as
    ``failing_as_unavailable`` logs it; for a step's own ``except``, on its hot path."""
    reason = str(error) or _unsaid(error, deadline)
    store_log.warning("%s unavailable: %s: %s: %s", what, doing(), type(error).__name__, reason)
    return StoreUnavailableError()


def _unsaid(error: BaseException, deadline: float | None) -> str:
    # The error came without a message: the step's deadline (asyncio's TimeoutError), or one
    # of redis-py's errors raised bare.
    if isinstance(error, TimeoutError) and deadline is not None:
        return f"no answer within {deadline:g} s"
    cause = error.__cause__ or error.__context__
    return f"after {type(cause).__name__}: {cause}" if cause else "(no message)"


def deadline_argument(deadline: float | None) -> str:
    """A deadline in the server's time (``ServerClock.deadline``) as a script's argument: ''
    while the server's clock is not known."""
    return "" if deadline is None else number(deadline)


def _late(step: str) -> StoreUnavailableError:
    # Only if the answer came back within the margin the deadline keeps: usually the step has
    # given up already and nobody reads it.
    store_log.warning("Redis: %s reached the server after its deadline and was not written", step)
    return StoreUnavailableError()


def number(value: float) -> str:
    # repr is the shortest string that reads back as the same double, in Python and in Lua.
    return repr(float(value))
