"""A cap on concurrent password hashing, so login memory has a bound.

Argon2 takes its memory cost (64 MiB by default) per hash, for unknown users as well (against
username enumeration), and the thread pool runs 40 at once: unbounded, a burst of bad logins
takes gigabytes. ``HashingLimit`` lets at most ``limit`` hashes run in the process; the others
wait their turn for a short, bounded time and are then refused with a 503 and ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

from auth_refresh.exceptions import AuthLocalBusyError

__all__ = ["HashingLimit", "default_hash_concurrency"]

T = TypeVar("T")


def default_hash_concurrency() -> int:
    """The CPUs this process may run on: more hashes at once only queue for a core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on every platform
        return max(1, os.cpu_count() or 1)


class HashingLimit:
    """At most ``limit`` hashes at once; a caller waits at most ``wait_seconds`` for a turn.

    Turns are handed over in arrival order. The count is shared by every event loop and
    thread of the process, as the memory is.
    """

    def __init__(self, limit: int, wait_seconds: float) -> None:
        if limit < 1 or wait_seconds <= 0:
            raise ValueError("a hashing limit needs limit >= 1 and wait_seconds > 0")
        self.limit = limit
        self.wait_seconds = wait_seconds
        self._lock = threading.Lock()
        self._running = 0
        # Each waiting caller's turn and its event loop, in arrival order.
        self._waiting: OrderedDict[asyncio.Future[None], asyncio.AbstractEventLoop] = OrderedDict()

    @property
    def running(self) -> int:
        """How many hashes hold a turn now."""
        return self._running

    async def run(self, function: Callable[..., T], *args: object) -> T:
        """``function(*args)`` in the thread pool once a turn is free; ``AuthLocalBusyError``
        when none is within ``wait_seconds``."""
        await self._acquire()
        try:
            # Not abandoned if the request is cancelled: the turn ends when the hash does.
            return await run_in_threadpool(function, *args)
        finally:
            self._release()

    async def _acquire(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._running < self.limit and not self._waiting:
                self._running += 1
                return
            turn: asyncio.Future[None] = loop.create_future()
            self._waiting[turn] = loop
        try:
            await asyncio.wait_for(asyncio.shield(turn), self.wait_seconds)
        except BaseException as error:  # the wait timed out, or the request was cancelled
            with self._lock:
                handed_over = self._waiting.pop(turn, None) is None
            if handed_over:
                # A release gave this caller the turn as it gave up: pass it on.
                self._release()
            if isinstance(error, TimeoutError):
                raise AuthLocalBusyError() from None
            raise

    def _release(self) -> None:
        with self._lock:
            while self._waiting:
                turn, loop = self._waiting.popitem(last=False)
                try:
                    # The turn passes to the next caller: the running count stays.
                    loop.call_soon_threadsafe(_start, turn)
                    return
                except RuntimeError:  # that caller's event loop is closed: it waits no more
                    continue
            self._running -= 1


def _start(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
