"""The SQLite store's own thread: every step runs there, never on an event loop.

The steps one pass of an event loop asks for are handed over together (one wake-up), and the
thread takes those queued meanwhile with them: it runs each in a savepoint of one
``BEGIN IMMEDIATE`` transaction (a step writing with one statement at most, on its own: SQLite
undoes a failed statement) and commits once (group commit), so under load one lock, one
commit and one hand-back to each event loop serve a batch. SQLite's write lock serialises the
batches of every process (WAL keeps readers out of the way); a batch waits for it in short,
random steps, and lets another process's waiting batch in (``sqlite_connection.WriteLock``).
A step that cannot start within ``busy_timeout`` of being asked for (another writer holds the
lock, or the queue is long) fails with ``StoreUnavailableError``; so does a batch that would
commit past that deadline (its steps ran long): it rolls back rather than commit, so a step is
answered by then, and a step answered with that error never takes effect.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from auth_refresh.exceptions import ConfigurationError, StoreUnavailableError
from auth_refresh.stores.sqlite_connection import (
    Step,
    WriteLock,
    in_savepoint,
    on_its_own,
    open_connection,
)

__all__ = ["SqliteWorker"]

# The most steps one transaction takes: a long batch would hold the write lock long.
MAX_BATCH = 64

store_log = logging.getLogger("auth_refresh.store")


@dataclass(slots=True)
class _Queued:
    step: Step
    deadline: float
    loop: asyncio.AbstractEventLoop
    savepoint: bool
    answer: asyncio.Future[Any] = field(init=False)

    def __post_init__(self) -> None:
        self.answer = self.loop.create_future()


Answer = tuple[_Queued, Any, BaseException | None]


class SqliteWorker:
    """The thread that runs a SQLite store's steps on its one connection, started by the first
    step; ``close`` ends it after the steps already asked for."""

    def __init__(self, path: str, busy_timeout: float) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._queue: queue.SimpleQueue[list[_Queued] | None] = queue.SimpleQueue()
        self._pending: dict[asyncio.AbstractEventLoop, list[_Queued]] = {}
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self._lock = WriteLock()  # used on the store's thread only

    async def run(self, step: Step, *, savepoint: bool = True) -> Any:
        """``step``'s result, run on the thread; ``StoreUnavailableError`` when it could not.
        Without ``savepoint`` (a step writing with one statement at most) a failed step is
        undone by SQLite, not by a savepoint of its own."""
        if self._closed:
            raise StoreUnavailableError()
        if self._thread is None:
            self._start_thread()
        loop = asyncio.get_running_loop()
        queued = _Queued(step, time.monotonic() + self.busy_timeout, loop, savepoint)
        # The steps one pass of the event loop asks for go to the thread together: one wake-up.
        pending = self._pending.get(loop)
        if pending is None:
            pending = self._pending[loop] = []
            loop.call_soon(self._hand_over, loop)
        pending.append(queued)
        return await queued.answer

    async def close(self) -> None:
        self._closed = True
        thread = self._thread
        if thread is not None:
            # Steps asked for in this pass of the loop go first.
            pending = self._pending.pop(asyncio.get_running_loop(), None)
            if pending:
                self._queue.put(pending)
            self._queue.put(None)
            await asyncio.get_running_loop().run_in_executor(None, thread.join)

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        self._queue.put(self._pending.pop(loop))

    def _start_thread(self) -> None:
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(
                    target=self._serve, name="auth-refresh-sqlite", daemon=True
                )
                thread.start()
                self._thread = thread

    def _serve(self) -> None:
        connection: sqlite3.Connection | None = None
        try:
            while (first := self._queue.get()) is not None:
                batch = list(first)
                stop = False
                while len(batch) < MAX_BATCH:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    batch += more
                connection = self._run_batch(connection, batch)
                if stop:
                    break
        finally:
            if connection is not None:
                connection.close()

    def _run_batch(
        self, connection: sqlite3.Connection | None, batch: list[_Queued]
    ) -> sqlite3.Connection | None:
        now = time.monotonic()
        timed_out = sqlite3.OperationalError("queued longer than the busy timeout")
        answers: list[Answer] = [
            (queued, None, timed_out) for queued in batch if queued.deadline <= now
        ]
        live = [queued for queued in batch if queued.deadline > now and not queued.answer.done()]
        if not live:
            _answer(answers)
            return connection
        settled = len(answers)
        try:
            deadline = min(queued.deadline for queued in live)
            if connection is None:
                # Opening (and migrating) the file, once, is not counted against the steps
                # that wait for it: they get their whole wait for the lock and the commit.
                opening = time.monotonic()
                connection = open_connection(self.path, self.busy_timeout)
                deadline += time.monotonic() - opening
            self._lock.begin(connection, deadline)
            try:
                if len(live) == 1:
                    # Alone in its transaction: the transaction is its savepoint.
                    result = live[0].step(connection)
                    answers.append((live[0], result, None))
                else:
                    for queued in live:
                        run = in_savepoint if queued.savepoint else on_its_own
                        answers.append((queued, *run(connection, queued.step)))
                if time.monotonic() > deadline:
                    # Late: the first of its steps should have been answered by now.
                    raise sqlite3.OperationalError("past the busy timeout before the commit")
                # Inside the try: a COMMIT that fails leaves nothing half-written either.
                self._lock.commit(connection, deadline)
            except BaseException:
                # SQLite rolls some errors back itself; a second ROLLBACK would hide the first.
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        except Exception as error:
            # Whatever went wrong (a locked or broken file, an unexpected error): every step
            # of the batch fails closed, and the thread serves the next batch.
            answers[settled:] = [(queued, None, error) for queued in live]
        _answer(answers)
        return connection


def _answer(answers: list[Answer]) -> None:
    # One wake-up per event loop for the whole batch.
    by_loop: dict[asyncio.AbstractEventLoop, list[Answer]] = {}
    for answer in answers:
        by_loop.setdefault(answer[0].loop, []).append(answer)
    for loop, loop_answers in by_loop.items():
        # RuntimeError: the loop is closed, nobody waits for these answers.
        with suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, loop_answers)


def _settle(answers: list[Answer]) -> None:
    for queued, result, error in answers:
        if queued.answer.done():
            continue  # the caller went away (its request was cancelled)
        if isinstance(error, ConfigurationError):
            queued.answer.set_exception(error)
        elif error is not None:
            # "database is locked" after busy_timeout, I/O errors, a corrupt file or row:
            # fail closed.
            store_log.warning("SQLite store unavailable: %s: %s", type(error).__name__, error)
            queued.answer.set_exception(StoreUnavailableError())
        else:
            queued.answer.set_result(result)
