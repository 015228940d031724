"""``redis://host:port/db``: token families in Redis, shared by every host (extra
``auth-refresh[redis]``).

Each step is one Lua script, so one round trip, atomic on the server. A family is one hash
that expires with its live token; a set per subject lists its families for ``revoke_subject``.
The client has connect and socket timeouts (0.5 s; a URL query such as
``?socket_timeout=0.2`` overrides them) and no retries, and every step has a deadline: a dead or
hung Redis gives ``StoreUnavailableError`` well within 2 s. The scripts name keys they were not
given (a subject's families), so use a standalone Redis, not Redis Cluster. ``rediss://`` URLs
connect with TLS.

The steps go straight over redis-py connections the store keeps idle between steps, one step
on a connection at a time: the client's per-command machinery (pool lock, retry wrapper,
telemetry) costs a refresh more than the round trip itself.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import weakref
from typing import Any, cast

import redis.asyncio as redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from auth_refresh.authentication import TokenPair
from auth_refresh.exceptions import ConfigurationError, StoreUnavailableError
from auth_refresh.store import Rotation, RotationOutcome, Successor

__all__ = ["RedisRefreshTokenStore"]

# Defaults; the URL's query (socket_connect_timeout, socket_timeout) wins over them.
CONNECT_TIMEOUT_SECONDS = 0.5
SOCKET_TIMEOUT_SECONDS = 0.5
# The most one step may take, whatever the socket does: under the 2 s promised to clients.
STEP_DEADLINE_SECONDS = 1.5
KEY_PREFIX = "auth-refresh:"
# Steps at once per event loop, each on a connection of its own; more wait for a free one
# (within the step's deadline) rather than open connections without end.
MAX_CONNECTIONS = 64

store_log = logging.getLogger("auth_refresh.store")

# Numbers go in and out as strings: '%.17g' gives back the exact double that came in.
START_FAMILY = """
redis.call('HSET', KEYS[1], 'subject', ARGV[1], 'created_at', ARGV[2], 'expires_at', ARGV[3],
    'live', ARGV[4])
redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', math.ceil(tonumber(ARGV[3]) * 1000)))
redis.call('SADD', KEYS[2], ARGV[5])
local lifetime_ms = math.ceil(tonumber(ARGV[6]) * 1000)
if redis.call('PTTL', KEYS[2]) < lifetime_ms then
    redis.call('PEXPIRE', KEYS[2], string.format('%.0f', lifetime_ms))
end
return 1
"""

# store.decide_rotation, line for line.
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
    -- The caller holds the successor pair already: it is not sent back.
    return {'rotated', subject}
end
if token_id == family[5] and family[6] and family[7] and now < tonumber(family[6]) + grace then
    return {'grace', subject, family[7]}
end
redis.call('HSET', KEYS[1], 'revoked', '1')
redis.call('HDEL', KEYS[1], 'successor')
return {'reused', subject}
"""

REVOKE_FAMILY = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('HSET', KEYS[1], 'revoked', '1')
    redis.call('HDEL', KEYS[1], 'successor')
end
return 1
"""

REVOKE_SUBJECT = """
for _, family_id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    local key = ARGV[1] .. family_id
    if redis.call('EXISTS', key) == 1 then
        redis.call('HSET', key, 'revoked', '1')
        redis.call('HDEL', key, 'successor')
    else
        redis.call('SREM', KEYS[1], family_id)
    end
end
return 1
"""


class RedisRefreshTokenStore:
    """Families in Redis; each step one Lua script."""

    def __init__(self, client: redis.Redis, *, key_prefix: str = KEY_PREFIX) -> None:
        self._client = client
        self._pool = client.connection_pool
        # A connection belongs to the event loop that opened it.
        self._connections: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Connections] = (
            weakref.WeakKeyDictionary()
        )
        self._family_prefix = key_prefix + "family:"
        self._subject_prefix = key_prefix + "subject:"
        self._start_family = client.register_script(START_FAMILY)
        self._rotate = client.register_script(ROTATE)
        self._revoke_family = client.register_script(REVOKE_FAMILY)
        self._revoke_subject = client.register_script(REVOKE_SUBJECT)

    @classmethod
    def from_url(cls, url: str) -> RedisRefreshTokenStore:
        """A store over a new client for ``url`` (``redis://host:port/db``)."""
        try:
            client = redis.Redis.from_url(
                url,
                decode_responses=True,
                # A retry would double the wait on a dead server; the client may retry instead.
                retry=Retry(NoBackoff(), 0),
                socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                socket_timeout=SOCKET_TIMEOUT_SECONDS,
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
    ) -> None:
        expires_at = min(token_expires_at, now + absolute_lifetime)
        await self._call(
            self._start_family,
            [self._family_prefix + family_id, self._subject_prefix + subject],
            [
                subject,
                _number(now),
                _number(expires_at),
                token_id,
                family_id,
                _number(absolute_lifetime),
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
            [self._family_prefix + family_id],
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
        outcome = RotationOutcome(answer[0])
        subject = answer[1] if len(answer) > 1 else None
        if outcome is RotationOutcome.ROTATED:
            return Rotation(outcome, subject, successor.pair)
        pair = cast(TokenPair, json.loads(answer[2])) if len(answer) > 2 else None
        return Rotation(outcome, subject, pair)

    async def revoke_family(self, family_id: str) -> None:
        await self._call(self._revoke_family, [self._family_prefix + family_id], [])

    async def revoke_subject(self, subject: str) -> None:
        await self._call(
            self._revoke_subject, [self._subject_prefix + subject], [self._family_prefix]
        )

    async def close(self) -> None:
        # Those of this loop; another loop's go with it.
        connections = self._connections.pop(asyncio.get_running_loop(), None)
        for connection in connections.idle if connections is not None else ():
            await connection.disconnect()
        await self._client.aclose()

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            async with asyncio.timeout(STEP_DEADLINE_SECONDS):
                return await self._evaluate(script, keys, args)
        except (RedisError, OSError, TimeoutError) as error:
            store_log.warning("Redis store unavailable: %s: %s", type(error).__name__, error)
            raise StoreUnavailableError() from None

    def _new_connection(self) -> AbstractConnection:
        # Made with the pool's settings (timeouts, no retries, decoding); the pool keeps none.
        return cast(AbstractConnection, self._pool.make_connection())  # type: ignore[no-untyped-call]

    async def _evaluate(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        loop = asyncio.get_running_loop()
        connections = self._connections.get(loop)
        if connections is None:
            connections = self._connections[loop] = _Connections()
        await connections.take_slot()
        try:
            return await self._evaluate_on(connections.idle, script, keys, args)
        finally:
            connections.give_slot_back()

    async def _evaluate_on(
        self, idle: list[AbstractConnection], script: Any, keys: list[str], args: list[Any]
    ) -> Any:
        connection = idle.pop() if idle else self._new_connection()
        try:
            await _ready(connection)
            try:
                await connection.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
                answer = await connection.read_response()
            except NoScriptError:
                # The server lost its script cache (a restart, SCRIPT FLUSH): EVAL loads it.
                await connection.send_command("EVAL", script.script, len(keys), *keys, *args)
                answer = await connection.read_response()
        except BaseException:
            # Whatever state it is in (a reply half read, a timeout), it is not used again.
            await connection.disconnect(nowait=True)
            raise
        idle.append(connection)
        return answer


class _Connections:
    """One event loop's connections: the idle ones, and the slots that bound them all.

    A semaphore of its own rather than ``asyncio.Semaphore``, whose acquire costs a refresh
    more than the rest of this bookkeeping: a step takes a slot at once while one is free."""

    def __init__(self) -> None:
        self.idle: list[AbstractConnection] = []
        self.taken = 0
        self.waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    async def take_slot(self) -> None:
        if self.taken < MAX_CONNECTIONS and not self.waiting:
            self.taken += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append(waiter)
        try:
            await waiter
        except BaseException:
            # Handed a slot and cancelled (the step's deadline) at the same moment: pass it on.
            if waiter.done() and not waiter.cancelled():
                self.give_slot_back()
            raise

    def give_slot_back(self) -> None:
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():  # not cancelled while it waited
                waiter.set_result(None)  # the slot goes straight to it
                return
        self.taken -= 1


async def _ready(connection: AbstractConnection) -> None:
    # An idle connection with something to read (the server closed it, or a stray reply) is
    # started over: the step must not be the one to find out. redis-py's pool skips this
    # check when maintenance notifications are on, as they are by default.
    if connection.is_connected and await connection.can_read():
        await connection.disconnect(nowait=True)
    await connection.connect()  # type: ignore[no-untyped-call]


def _number(value: float) -> str:
    # repr is the shortest string that reads back as the same double, in Python and in Lua.
    return repr(float(value))
