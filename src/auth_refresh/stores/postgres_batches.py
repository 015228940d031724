"""The PostgreSQL store's rotations, batched: those an event loop asks for while a batch is under
way go to the server together in the next, one call of ``auth_refresh_rotate_batch``.

A batch is one statement, so one transaction: it commits whole or not at all. A batch that
fails (server down, timed out, connection broken) answers every rotation in it with
``StoreUnavailableError`` and its connection is closed, not returned to the pool. Batches go in
the order asked, each under the earliest deadline of its callers, so each caller is answered by
its own deadline with no timer of its own; one that gave up (cancelled) is left out of a batch
not yet sent.

A rotation answered with an error never takes effect later: a batch carries the earliest of its
callers' deadlines, less ``COMMIT_MARGIN_SECONDS``, in the server's clock, and the server writes
nothing once its clock is past it (``auth_refresh_rotate_batch``, checked just before the
statement commits). So a batch that waited in a frozen server's socket, or ran late, rolls back
rather than committing after its callers were answered 503, and their retry finds the token
still live. The server's clock is read on the first connection, then every minute
(``ServerClock``); the deadline errs early by the read's round trip. What remains assumed: the
server's clock does not step back by more than the margin between two reads, and an answer
committed in time reaches its caller within the margin (a server frozen in the microseconds
between the check and the commit's WAL flush, or an event loop blocked longer than the margin,
can still answer late).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from auth_refresh.exceptions import StoreUnavailableError
from auth_refresh.stores.postgres_schema import ROTATE_BATCH

__all__ = [
    "BATCH_LIMIT",
    "COMMIT_MARGIN_SECONDS",
    "SERVER_FAILURES",
    "RotationBatches",
    "RotationRequest",
    "RotationRow",
    "ServerClock",
    "discard",
    "log_unavailable",
]

# One batch in flight per loop: with 16 refreshers arriving spread out, its batches were largest
# and its client CPU per rotation least (-13% and -25% against 2 and 4 in flight), at the same
# latency.
# A batch's rotations run one after another on the server, each row locked until the commit:
# the cap bounds that hold and the statement's time under its statement_timeout.
BATCH_LIMIT = 100
# How much sooner than the first of its callers gives up a batch must commit: time for the
# answer to reach the caller, and for the clocks to drift between two reads.
COMMIT_MARGIN_SECONDS = 0.5
# The server's clock is read again after this long; sooner (after a second) when the last read
# took longer than PRECISE_READ_SECONDS, whose round trip made the offset err early by as much.
CLOCK_READ_EVERY_SECONDS = 60.0
PRECISE_READ_SECONDS = 0.05
READ_SERVER_CLOCK = "SELECT extract(epoch FROM clock_timestamp())::double precision"

# auth_refresh_rotate's arguments: family id, presented token id, successor id, successor pair
# (JSON), successor's expiry, now, grace seconds, absolute lifetime.
RotationRequest = tuple[str, str, str, str, float, float, float, float]
# Its answer: outcome, the family's subject, the grace window's pair (JSON).
RotationRow = tuple[str, str | None, str | None]

# A rotation waiting for its batch: the request, when its caller gives up (time.monotonic()),
# and its answer.
_Waiting = tuple[RotationRequest, float, "asyncio.Future[RotationRow]"]

store_log = logging.getLogger("auth_refresh.store")

# What a server that is down, restarting, slow or broken raises: each a 503, never a guess.
# InternalClientError: asyncpg's protocol state, confused when the server ends a connection in
# the middle of an exchange (a killed backend: "cannot switch to state ...").
SERVER_FAILURES = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


def log_unavailable(error: BaseException) -> None:
    # What failed first, not what its cleanup met: a transaction's rollback on a connection the
    # server closed ("cannot call Transaction.__aexit__()") says nothing of why.
    while isinstance(error, asyncpg.InterfaceError) and isinstance(
        error.__context__, SERVER_FAILURES
    ):
        error = error.__context__
    if isinstance(error, asyncpg.InternalClientError):
        store_log.warning(
            "PostgreSQL store unavailable: the connection broke mid-exchange (%s: %s)",
            type(error).__name__,
            error,
        )
        return
    # A timeout says nothing of itself: the message says what timed out.
    detail = str(error) or ("no answer in time" if isinstance(error, TimeoutError) else repr(error))
    store_log.warning("PostgreSQL store unavailable: %s: %s", type(error).__name__, detail)


class ServerClock:
    """The database server's clock as this process sees it: ``time.monotonic()`` plus
    ``offset`` is never later than the server's ``clock_timestamp()`` at that moment, but by
    the round trip of the read it came from (and the drift since, under a minute).

    Read on a connection being acquired (the pool's ``setup``) when due: on the first, then
    every ``CLOCK_READ_EVERY_SECONDS``; no round trip of its own for the steps in between."""

    def __init__(self) -> None:
        self.offset: float | None = None
        self._offset_read_at = -math.inf  # when the kept offset was read
        self._read_at = -math.inf
        self._read_again_after = 0.0

    async def read_if_due(self, connection: PoolConnectionProxy[asyncpg.Record]) -> None:
        if time.monotonic() - self._read_at < self._read_again_after:
            return
        sent = time.monotonic()
        server_now: float = await connection.fetchval(READ_SERVER_CLOCK)
        received = time.monotonic()
        # The server read its clock somewhere between sent and received: taking received
        # makes the offset err early, never late.
        earliest = server_now - received
        stale = received - self._offset_read_at >= CLOCK_READ_EVERY_SECONDS
        if self.offset is None or stale or earliest > self.offset:
            self.offset, self._offset_read_at = earliest, received
        self._read_at = received
        precise = received - sent <= PRECISE_READ_SECONDS
        self._read_again_after = CLOCK_READ_EVERY_SECONDS if precise else 1.0

    def server_time(self, monotonic: float) -> float | None:
        """``monotonic`` (a ``time.monotonic()`` value) in the server's clock, erring early;
        None before the first read."""
        return None if self.offset is None else monotonic + self.offset


class RotationBatches:
    """One event loop's rotations over its pool: those asked for while a batch is under way go
    in the next, at most ``BATCH_LIMIT`` to a batch."""

    def __init__(self, pool: asyncpg.Pool, clock: ServerClock, deadline: float) -> None:
        self.pool = pool
        self._clock = clock
        self._deadline = deadline  # the longest a caller waits
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._sender: asyncio.Task[None] | None = None

    def submit(self, request: RotationRequest, deadline: float) -> asyncio.Future[RotationRow]:
        """``request``'s answer, for a caller who gives up at ``deadline``
        (``time.monotonic()``): a batch that cannot commit well before it writes nothing."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[RotationRow] = loop.create_future()
        self._waiting.append((request, deadline, answer))
        if self._sender is None:
            self._sender = loop.create_task(self._send_all())
        return answer

    async def finish(self) -> None:
        """Let the batches under way end within one deadline; cancel what is left (its callers
        get ``StoreUnavailableError``, its connection is closed)."""
        sender = self._sender
        if sender is None:
            return
        _, left = await asyncio.wait([sender], timeout=self._deadline)
        if left:
            sender.cancel()
            await asyncio.wait(left)

    async def _send_all(self) -> None:
        try:
            while self._waiting:
                batch: list[_Waiting] = []
                while self._waiting and len(batch) < BATCH_LIMIT:
                    waiting = self._waiting.popleft()
                    if not waiting[2].done():  # its caller gave up before it was sent
                        batch.append(waiting)
                if batch:
                    await self._send(batch)
        finally:
            # Now, not in a done callback: a rotation submitted before that ran would find
            # the sender still there, and wait with none left to send it.
            self._sender = None

    async def _send(self, batch: list[_Waiting]) -> None:
        columns = [
            list(column) for column in zip(*(request for request, _, _ in batch), strict=True)
        ]
        # When the first of its callers gives up: no later answer is of use to it.
        gives_up = min(deadline for _, deadline, _ in batch)
        try:
            async with (
                asyncio.timeout(max(0.0, gives_up - time.monotonic())),
                self.pool.acquire() as connection,
            ):
                # Read now: acquiring may have read the server's clock for the first time.
                commit_by = self._clock.server_time(gives_up - COMMIT_MARGIN_SECONDS)
                try:
                    rows = await connection.fetch(ROTATE_BATCH, *columns, commit_by)
                except asyncpg.PostgresError:
                    raise  # the server answered: the connection is in a known state
                except BaseException:
                    # Timed out or broken mid-statement: its state is unknown, so the
                    # connection goes, rather than back to the pool.
                    discard(connection)
                    raise
        except asyncio.CancelledError:
            _fail(batch)
            raise
        except SERVER_FAILURES as error:
            log_unavailable(error)
            _fail(batch)
            return
        except Exception:
            store_log.exception("PostgreSQL store: a rotation batch failed")
            _fail(batch)
            return
        for row in rows:
            answer = batch[row[0] - 1][2]
            if not answer.done():
                answer.set_result((row[1], row[2], row[3]))
        _fail(batch)  # none is left unanswered, whatever the server returned


def discard(connection: PoolConnectionProxy[asyncpg.Record]) -> None:
    """Close ``connection`` at once (its state is unknown), rather than return it to the pool;
    one the server already closed went back to the pool by itself."""
    # InterfaceError: released already, closed by the server (a killed backend, a broken socket).
    with contextlib.suppress(asyncpg.InterfaceError):
        connection.terminate()


def _fail(batch: list[_Waiting]) -> None:
    for _, _, answer in batch:
        if not answer.done():
            answer.set_exception(StoreUnavailableError())
