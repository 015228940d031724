"""The PostgreSQL store's rotations, batched: those an event loop asks for while a batch is under
way go to the server together in the next, one call of ``auth_refresh_rotate_batch``.

A batch is one statement, so one transaction: it commits whole or not at all. A batch that
fails (server down, timed out, connection broken) answers every rotation in it with
``StoreUnavailableError`` and its connection is closed, not returned to the pool. Each caller
waits under its own deadline: one whose deadline passes gives up, and its rotation is left out
of the batch if that batch has not been sent yet.
"""

from __future__ import annotations

import asyncio
import collections
import logging

import asyncpg

from auth_refresh.exceptions import StoreUnavailableError
from auth_refresh.stores.postgres_schema import ROTATE_BATCH

__all__ = [
    "BATCH_LIMIT",
    "SERVER_FAILURES",
    "RotationBatches",
    "RotationRequest",
    "RotationRow",
    "log_unavailable",
]

# One batch in flight per loop: with 16 refreshers arriving spread out, its batches were largest
# and its client CPU per rotation least (-13% and -25% against 2 and 4 in flight), at the same
# latency.
# A batch's rotations run one after another on the server, each row locked until the commit:
# the cap bounds that hold and the statement's time under its statement_timeout.
BATCH_LIMIT = 100

# auth_refresh_rotate's arguments: family id, presented token id, successor id, successor pair
# (JSON), successor's expiry, now, grace seconds, absolute lifetime.
RotationRequest = tuple[str, str, str, str, float, float, float, float]
# Its answer: outcome, the family's subject, the grace window's pair (JSON).
RotationRow = tuple[str, str | None, str | None]

_Waiting = tuple[RotationRequest, "asyncio.Future[RotationRow]"]

store_log = logging.getLogger("auth_refresh.store")

# What a server that is down, restarting, slow or broken raises: each a 503, never a guess.
SERVER_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def log_unavailable(error: BaseException) -> None:
    store_log.warning("PostgreSQL store unavailable: %s: %s", type(error).__name__, error)


class RotationBatches:
    """One event loop's rotations over its pool: those asked for while a batch is under way go
    in the next, at most ``BATCH_LIMIT`` to a batch."""

    def __init__(self, pool: asyncpg.Pool, deadline: float) -> None:
        self.pool = pool
        self._deadline = deadline
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._sender: asyncio.Task[None] | None = None

    def submit(self, request: RotationRequest) -> asyncio.Future[RotationRow]:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[RotationRow] = loop.create_future()
        self._waiting.append((request, answer))
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
                    if not waiting[1].done():  # its caller gave up before it was sent
                        batch.append(waiting)
                if batch:
                    await self._send(batch)
        finally:
            # Now, not in a done callback: a rotation submitted before that ran would find
            # the sender still there, and wait with none left to send it.
            self._sender = None

    async def _send(self, batch: list[_Waiting]) -> None:
        columns = [list(column) for column in zip(*(request for request, _ in batch), strict=True)]
        try:
            async with asyncio.timeout(self._deadline), self.pool.acquire() as connection:
                try:
                    rows = await connection.fetch(ROTATE_BATCH, *columns)
                except BaseException:
                    # Timed out or broken mid-statement: its state is unknown, so the
                    # connection goes, rather than back to the pool.
                    connection.terminate()
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
            answer = batch[row[0] - 1][1]
            if not answer.done():
                answer.set_result((row[1], row[2], row[3]))
        _fail(batch)  # none is left unanswered, whatever the server returned


def _fail(batch: list[_Waiting]) -> None:
    for _, answer in batch:
        if not answer.done():
            answer.set_exception(StoreUnavailableError())
