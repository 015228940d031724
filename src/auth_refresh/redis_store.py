"""``redis://host:port/db``: token families in Redis, shared by every host (extra
``auth-refresh[redis]``).

Each step is one Lua script, so one round trip, atomic on the server. A family is one hash
that expires with its live token; a set per subject lists its families for ``revoke_subject``.
The client has connect and socket timeouts (0.5 s; a URL query such as
``?socket_timeout=0.2`` overrides them) and no retries, and every step has a deadline: a dead or
hung Redis gives ``StoreUnavailableError`` well within 2 s. The scripts name keys they were not
given (a subject's families), so use a standalone Redis, not Redis Cluster. ``rediss://`` URLs
connect with TLS.

redis-py opens each connection (TCP, TLS or a Unix socket, AUTH, SELECT, as the URL says) and
the store then speaks on it itself: one connection per event loop, every step written as it
comes and the replies matched to the steps in order (pipelining). The client's per-command
machinery (pool lock, retry wrapper, a task per timeout, telemetry) cost a refresh more than the
round trip; several steps at once now share one connection and the server's read events.
A connection that timed out, broke or was closed by the server is dropped, and the next step
opens another.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import weakref
from collections.abc import Callable
from typing import Any, cast

import hiredis
import redis.asyncio as redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

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
        self._socket_timeout: float | None = self._pool.connection_kwargs.get("socket_timeout")
        # A connection belongs to the event loop that opened it.
        self._pipes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPipe] = (
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
        # This loop's connection; another loop's goes with it.
        pipe = self._pipes.pop(asyncio.get_running_loop(), None)
        if pipe is not None:
            pipe.close()
        await self._client.aclose()

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            async with asyncio.timeout(STEP_DEADLINE_SECONDS) as deadline:
                return await self._evaluate(deadline, script, keys, args)
        except (RedisError, OSError, TimeoutError) as error:
            store_log.warning("Redis store unavailable: %s: %s", type(error).__name__, error)
            raise StoreUnavailableError() from None

    async def _evaluate(
        self, deadline: asyncio.Timeout, script: Any, keys: list[str], args: list[Any]
    ) -> Any:
        loop = asyncio.get_running_loop()
        pipe = self._pipes.get(loop)
        if pipe is None:
            pipe = self._pipes[loop] = _LoopPipe(self._new_connection)
        connection = await pipe.connection()
        if self._socket_timeout is not None:
            # The reply within the socket timeout as well as the step's deadline.
            when = deadline.when()
            reply_by = loop.time() + self._socket_timeout
            deadline.reschedule(reply_by if when is None else min(when, reply_by))
        try:
            answer = await connection.send(_command("EVALSHA", script.sha, len(keys), *keys, *args))
            if isinstance(answer, hiredis.ReplyError) and str(answer).startswith("NOSCRIPT"):
                # The server lost its script cache (a restart, SCRIPT FLUSH): EVAL loads it.
                answer = await connection.send(
                    _command("EVAL", script.script, len(keys), *keys, *args)
                )
        except asyncio.CancelledError:
            # Timed out (or the request went away): a hung server or a half-open connection
            # is not waited on by the next step too.
            if deadline.expired():
                connection.close()
            raise
        if isinstance(answer, hiredis.ReplyError):
            raise RedisError(str(answer))
        return answer

    def _new_connection(self) -> AbstractConnection:
        # Made with the pool's settings (timeouts, no retries, TLS); the pool keeps none.
        return cast(AbstractConnection, self._pool.make_connection())  # type: ignore[no-untyped-call]


class _LoopPipe:
    """One event loop's connection to Redis, and its opening while one is under way."""

    def __init__(self, make_connection: Callable[[], AbstractConnection]) -> None:
        self._make_connection = make_connection
        self._current: _Pipe | None = None
        self._opening: asyncio.Task[_Pipe] | None = None

    async def connection(self) -> _Pipe:
        current = self._current
        if current is not None and current.is_open:
            return current
        if self._opening is None:
            self._opening = asyncio.get_running_loop().create_task(self._open())
            # Retrieved here as well: every step that waited for it may have timed out.
            self._opening.add_done_callback(_retrieve)
        # Shielded: one step's deadline does not cancel the opening the others wait for.
        return await asyncio.shield(self._opening)

    async def _open(self) -> _Pipe:
        try:
            connection = self._make_connection()
            await connection.connect()  # type: ignore[no-untyped-call]
            self._current = _Pipe(connection)
            return self._current
        finally:
            self._opening = None

    def close(self) -> None:
        if self._current is not None:
            self._current.close()


class _Pipe(asyncio.Protocol):
    """A connection redis-py opened, taken over: commands are written as they come, replies
    are matched to them in the order sent."""

    def __init__(self, connection: AbstractConnection) -> None:
        writer = connection._writer
        assert writer is not None
        # Kept, and redis-py's connection with it: they close the socket when collected.
        self._connection = connection
        self._transport = cast(asyncio.Transport, writer.transport)
        self._replies = hiredis.Reader(encoding="utf-8")
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.is_open = not self._transport.is_closing()
        self._transport.set_protocol(self)

    def send(self, command: bytes) -> asyncio.Future[Any]:
        if not self.is_open:
            raise ConnectionError("the connection to Redis is closed")
        answer = asyncio.get_running_loop().create_future()
        self._waiting.append(answer)
        self._transport.write(command)
        return answer

    def data_received(self, data: bytes) -> None:
        self._replies.feed(data)
        while True:
            try:
                reply = self._replies.gets()
            except hiredis.ProtocolError:
                self.close()
                return
            if reply is False:
                return
            if not self._waiting:
                self.close()  # a reply nobody asked for: the stream is out of step
                return
            answer = self._waiting.popleft()
            if not answer.done():  # a step that gave up (its deadline) has its reply skipped
                answer.set_result(reply)

    def connection_lost(self, error: Exception | None) -> None:
        self.close()

    def close(self) -> None:
        self.is_open = False
        # Through redis-py, which then counts its connection closed.
        self._connection._close()  # type: ignore[no-untyped-call]
        while self._waiting:
            answer = self._waiting.popleft()
            if not answer.done():
                answer.set_exception(ConnectionError("the connection to Redis was lost"))


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _command(*parts: str | int) -> bytes:
    # RESP: an array of bulk strings.
    encoded = [part.encode() if isinstance(part, str) else b"%d" % part for part in parts]
    return b"*%d\r\n" % len(encoded) + b"".join(
        b"$%d\r\n%s\r\n" % (len(part), part) for part in encoded
    )


def _number(value: float) -> str:
    # repr is the shortest string that reads back as the same double, in Python and in Lua.
    return repr(float(value))
