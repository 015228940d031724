"""``postgresql://user:pass@host:port/db``: token families in PostgreSQL, shared by every host
(extra ``auth-refresh[postgres]``, driver asyncpg).

Any libpq connection URI works (``postgres://`` too, ``?host=/socket/dir``, ``sslmode=``,
``connect_timeout=``), and server settings in the query (``statement_timeout=``,
``synchronous_commit=``, ``application_name=``). Two parameters are the store's own and are not
sent to the server: ``auth_refresh_schema=managed`` (the tables exist already, made from the DDL
in docs/postgres-store.md: the store only checks their version) and ``auth_refresh_pool_size``
(connections per process, 10 by default).

Every commit waits for its WAL flush (``synchronous_commit=on``): a refresh the client was
answered survives a server crash. ``?synchronous_commit=off`` in the URL trades that for
throughput: a crash may then lose the last moments' refreshes, whose sessions are refused as
reuse at their next refresh (a new login); it never makes a token valid that should not be.

The schema carries its version (the table ``auth_refresh_schema``): the first step creates it,
or migrates an older one (``MIGRATIONS``), and refuses a newer one with ``ConfigurationError``.

Each row is also the session its family is (``session_id``, unique and indexed, ``refreshed_at``,
``user_agent``, ``client_ip``; schema version 2, migrated from version 1). A subject's live
families are indexed apart (schema version 4): listing, capping and revoking its sessions walk
those only, never the revoked ones kept until they expire; a login keeps the cap on sessions
per subject in its own statement (``auth_refresh_start_family_before``), taking turns with the
subject's other logins.

A refresh is one round trip, or a share of one: the rotations an event loop asks for while a
batch is under way go together in the next (``postgres_batches``), one call of the
``auth_refresh_rotate_batch`` function, which runs ``auth_refresh_rotate`` (``decide_rotation``
in PL/pgSQL, holding the family's row lock for the decision and the write) for each, in family
id order, in one transaction. Every statement has a server-side ``statement_timeout`` and every
step a client-side deadline (a rotation's, its batch's): a server that is down, restarting or
hung gives ``StoreUnavailableError`` within 1.5 s; a connection that timed out is dropped, and
the pool opens a new one. A rotation or a login answered with that error never takes effect
later: its statement carries a deadline in the server's clock, past which it writes nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar, cast

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from auth_refresh.exceptions import StoreUnavailableError
from auth_refresh.stores.base import (
    Rotation,
    RotationOutcome,
    SessionCursor,
    SessionRecord,
    SessionStart,
    Successor,
)
from auth_refresh.stores.postgres_batches import (
    COMMIT_MARGIN_SECONDS,
    SERVER_FAILURES,
    RotationBatches,
    RotationRequest,
    RotationRow,
    ServerClock,
    discard,
    log_unavailable,
)
from auth_refresh.stores.postgres_schema import (
    FIRST_USE_PROOF,
    LIST_SESSIONS,
    LIST_SESSIONS_AFTER,
    REVOKE_FAMILY,
    REVOKE_OTHERS,
    REVOKE_SESSION,
    REVOKE_SUBJECT,
    SCHEMA_TABLE,
    SESSION_ACTIVE,
    START_FAMILY_BEFORE,
    check_schema,
)
from auth_refresh.stores.postgres_url import SERVER_SETTINGS, split_url
from auth_refresh.types import TokenPair

__all__ = ["PostgresRefreshTokenStore", "split_url"]

URL_SCHEMES = ("postgresql://", "postgres://")
CONNECT_TIMEOUT_SECONDS = 0.5
# The most one step may take, whatever the network does: under the 2 s promised to clients.
STEP_DEADLINE_SECONDS = 1.5
POOL_SIZE = 10
PURGE_BATCH = 100

T = TypeVar("T")

# The databases whose schema a store of this process found current: checked once per process.
_CHECKED_SCHEMAS: set[str] = set()


class PostgresRefreshTokenStore:
    """Families in one PostgreSQL table; each step one statement on a pooled connection,
    rotations batched."""

    def __init__(
        self,
        dsn: str,
        *,
        create_schema: bool = True,
        pool_size: int = POOL_SIZE,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
        server_settings: dict[str, str] | None = None,
    ) -> None:
        self._dsn = dsn
        self._create_schema = create_schema
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._server_settings = {**SERVER_SETTINGS, **(server_settings or {})}
        # A pool (its connections) belongs to the event loop that opened it.
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncpg.Pool] = (
            weakref.WeakKeyDictionary()
        )
        self._rotations: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RotationBatches] = (
            weakref.WeakKeyDictionary()
        )
        self._schema_checked = self._dsn in _CHECKED_SCHEMAS
        self._schema_check: asyncio.Task[None] | None = None
        self._clock = ServerClock()

    @classmethod
    def from_url(cls, url: str) -> PostgresRefreshTokenStore:
        """A store for ``url``: a libpq URI, plus the store's own query parameters."""
        dsn, options = split_url(url)
        return cls(dsn, **options)

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
        gives_up = time.monotonic() + STEP_DEADLINE_SECONDS

        async def start(connection: PoolConnectionProxy[asyncpg.Record]) -> None:
            # Read after acquiring, which may read the server's clock first. One statement: no
            # COMMIT of its own that a frozen server could run after the caller got its 503.
            commit_by = self._clock.server_time(gives_up - COMMIT_MARGIN_SECONDS)
            await connection.execute(
                START_FAMILY_BEFORE,
                family_id,
                subject,
                now,
                token_expires_at,
                absolute_lifetime,
                token_id,
                PURGE_BATCH,
                session.session_id,
                session.user_agent,
                session.client_ip,
                max(0, max_sessions - 1),
                commit_by,
            )

        await self._step(start)

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
        if not _storable(family_id, token_id):
            return Rotation(RotationOutcome.UNKNOWN)
        answer, subject, stored = await self._rotation(
            (
                family_id,
                token_id,
                successor.token_id,
                json.dumps(successor.pair),
                successor.expires_at,
                now,
                grace_seconds,
                absolute_lifetime,
            )
        )
        outcome = RotationOutcome(answer)
        if outcome is RotationOutcome.ROTATED:
            return Rotation(outcome, subject, successor.pair)
        pair = cast(TokenPair, json.loads(stored)) if stored is not None else None
        return Rotation(outcome, subject, pair)

    async def revoke_family(self, family_id: str) -> None:
        if not _storable(family_id):
            return
        await self._step(lambda connection: connection.execute(REVOKE_FAMILY, family_id))

    async def revoke_subject(self, subject: str, *, now: float) -> int:
        if not _storable(subject):
            return 0
        ended: int = await self._step(
            lambda connection: connection.fetchval(REVOKE_SUBJECT, subject, now)
        )
        return ended

    async def session_active(self, session_id: str, *, now: float) -> bool:
        if not _storable(session_id):
            return False
        active = await self._step(
            lambda connection: connection.fetchval(SESSION_ACTIVE, session_id, now)
        )
        return bool(active)

    async def list_sessions(
        self, subject: str, *, now: float, limit: int, after: SessionCursor | None = None
    ) -> list[SessionRecord]:
        if not _storable(subject) or (after is not None and not _storable(after.session_id)):
            return []
        arguments: tuple[str | float, ...]
        if after is None:
            statement, arguments = LIST_SESSIONS, (subject, now, limit)
        else:
            statement = LIST_SESSIONS_AFTER
            arguments = (subject, now, limit, after.created_at, after.session_id)
        rows = await self._step(lambda connection: connection.fetch(statement, *arguments))
        return [SessionRecord(**dict(row)) for row in rows]

    async def revoke_session(self, subject: str, session_id: str, *, now: float) -> bool:
        if not _storable(subject, session_id):
            return False
        status = await self._step(
            lambda connection: connection.execute(REVOKE_SESSION, session_id, subject, now)
        )
        return status == "UPDATE 1"

    async def revoke_other_sessions(self, subject: str, keep: str | None, *, now: float) -> int:
        if not _storable(subject):
            return 0
        if keep is not None and not _storable(keep):
            keep = None  # no session is that one: none is kept
        ended: int = await self._step(
            lambda connection: connection.fetchval(REVOKE_OTHERS, subject, now, keep)
        )
        return ended

    async def migrate(self) -> int:
        """Create or migrate the schema now (the first step would); its version. No step
        deadline: the schema's own statement timeout bounds it."""
        with _unavailable_as_503():
            pool = await self._pool()
            async with pool.acquire() as connection:
                version: int = await connection.fetchval(
                    "SELECT max(version) FROM auth_refresh_schema"
                )
            return version

    async def exists(self) -> bool:
        """Whether the database holds this store's tables (``auth_refresh_schema``), looked up
        without creating them (any other first step would): a tool that only reads (the CLI's
        ``sessions list``) asks first, and creates no store where there is none."""
        found = await self._step(
            lambda connection: connection.fetchval(SCHEMA_TABLE), check_schema=False
        )
        return found is not None

    async def close(self) -> None:
        if self._schema_check is not None and not self._schema_check.done():
            self._schema_check.cancel()
        loop = asyncio.get_running_loop()
        rotations = self._rotations.pop(loop, None)
        if rotations is not None:
            # Its batches, under way or waiting, are answered (or cancelled at their deadline)
            # before the pool they take connections from closes.
            await rotations.finish()
        self._rotations.clear()
        pool = self._pools.pop(loop, None)
        # Another loop's pool cannot be awaited from here: its connections are closed at once.
        for other in list(self._pools.values()):
            other.terminate()
        self._pools.clear()
        if pool is not None:
            try:
                async with asyncio.timeout(STEP_DEADLINE_SECONDS):
                    await pool.close()
            except SERVER_FAILURES:
                pool.terminate()

    async def first_use(self, key: str, *, expires_at: float, now: float) -> bool:
        """``ProofReplayCache``: each step purges a batch of expired keys."""
        arguments = (key, expires_at, now)
        found = await self._step(
            lambda connection: connection.fetchval(FIRST_USE_PROOF, *arguments)
        )
        return found is not None

    async def _rotation(self, request: RotationRequest) -> RotationRow:
        gives_up = time.monotonic() + STEP_DEADLINE_SECONDS
        loop = asyncio.get_running_loop()
        rotations = self._rotations.get(loop)
        if rotations is None or rotations.pool is not self._pools.get(loop):
            with _unavailable_as_503():
                async with asyncio.timeout(STEP_DEADLINE_SECONDS):
                    pool = await self._pool()
            rotations = self._rotations.get(loop)
            if rotations is None or rotations.pool is not pool:
                rotations = RotationBatches(pool, self._clock, STEP_DEADLINE_SECONDS)
                self._rotations[loop] = rotations
        # No timer of its own: batches go in order, each under its earliest caller's deadline.
        return await rotations.submit(request, gives_up)

    async def _step(
        self,
        work: Callable[[PoolConnectionProxy[asyncpg.Record]], Awaitable[T]],
        *,
        check_schema: bool = True,
    ) -> T:
        with _unavailable_as_503():
            async with asyncio.timeout(STEP_DEADLINE_SECONDS):
                pool = await self._pool(check_schema=check_schema)
                async with pool.acquire() as connection:
                    try:
                        return await work(connection)
                    except asyncpg.PostgresError:
                        raise  # the server answered: the connection is in a known state
                    except BaseException:
                        # Timed out or broken mid-statement: its state is unknown, so the
                        # connection goes, rather than back to the pool.
                        discard(connection)
                        raise

    async def _pool(self, *, check_schema: bool = True) -> asyncpg.Pool:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            # No connection is opened here: the first step opens one, under its deadline.
            pool = asyncpg.create_pool(
                self._dsn,
                min_size=0,
                max_size=self._pool_size,
                timeout=self._connect_timeout,
                server_settings=self._server_settings,
                # The store sets no session state (a failed step's connection is closed), so
                # the default reset, a round trip per step, has nothing to undo.
                reset=_keep_session,
                # A round trip only when the server's clock is due to be read again.
                setup=self._clock.read_if_due,
            )
            self._pools[loop] = pool
            await pool
        if check_schema and not self._schema_checked:
            checking = self._schema_check
            if checking is None or (
                checking.done() and (checking.cancelled() or checking.exception() is not None)
            ):
                checking = self._schema_check = loop.create_task(self._check_schema(pool))
                checking.add_done_callback(_retrieve)
            # Shielded: creating the schema may take longer than one step (a busy disk, another
            # process creating it); this step gives up at its deadline, the creation goes on.
            await asyncio.shield(checking)
        return pool

    async def _check_schema(self, pool: asyncpg.Pool) -> None:
        async with pool.acquire() as connection:
            await check_schema(connection, create=self._create_schema)
        self._schema_checked = True
        _CHECKED_SCHEMAS.add(self._dsn)


@contextmanager
def _unavailable_as_503() -> Iterator[None]:
    """The server's failures, logged, as ``StoreUnavailableError``."""
    try:
        yield
    except SERVER_FAILURES as error:
        log_unavailable(error)
        raise StoreUnavailableError() from None


def _storable(*texts: str) -> bool:
    """Whether PostgreSQL text can hold these: not with a NUL, so an id with one names nothing
    stored (answered here, rather than as the server's error)."""
    return not any("\x00" in text for text in texts)


def _retrieve(task: asyncio.Task[None]) -> None:
    # Its error is seen by the next step; the step that waited for it may have given up.
    if not task.cancelled():
        task.exception()


async def _keep_session(connection: asyncpg.Connection[asyncpg.Record]) -> None:
    pass
