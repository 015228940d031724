"""A Redis server's clock, as seen from this process: how a step's deadline is written in the
server's time, so that a script that writes (a rotation, a login) refuses to once the step has
given up (``redis_scripts.LATE``): a request answered 503 never takes effect later.

The offset is read with ``TIME`` when the store first reaches the server, then again in the
background every ``RESYNC_SECONDS`` (no round trip on a step): it is the server's time minus
the middle of the round trip, on this process's monotonic clock (a change of the host's wall
clock moves nothing). The server read its clock somewhere in that round trip, so the offset is
known to within half of it; a deadline is written that much earlier, and ``MARGIN_SECONDS``
earlier still, for the answer's way back. A reading taken over a slow round trip is kept only
if it is at least as precise as the one it would replace (whose precision wanes by
``DRIFT_PER_SECOND`` of its age).

What is left assumed: the server's clock does not jump (an operator setting it, a leap smeared
by steps) by more than the margin between two readings; it may drift as NTP lets it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from auth_refresh.stores.redis_core import STEP_DEADLINE_SECONDS, UNAVAILABLE, store_log

__all__ = [
    "MARGIN_SECONDS",
    "RESYNC_SECONDS",
    "RETRY_SECONDS",
    "ServerClock",
    "ServerClocks",
    "TimeReader",
]

# Before the step gives up, for its answer to travel back and be read.
MARGIN_SECONDS = 0.25
RESYNC_SECONDS = 60.0
# A reading less precise than this is taken again soon rather than in a minute.
PRECISE_SECONDS = 0.05
RETRY_SECONDS = 1.0
# How fast two clocks may drift apart (500 ppm: more than NTP lets a clock slew).
DRIFT_PER_SECOND = 5e-4


class ServerClock:
    """The offset between one server's clock and ``time.monotonic()``."""

    def __init__(self) -> None:
        self._offset: float | None = None
        self._error = 0.0  # at most this far off, when read
        self._read_at = 0.0
        self._tried_at = float("-inf")

    def due(self) -> bool:
        """Whether a new reading is due."""
        wait = RESYNC_SECONDS if self._error <= PRECISE_SECONDS else RETRY_SECONDS
        return time.monotonic() - self._tried_at >= wait

    def deadline(self, until: float) -> float | None:
        """``until`` (``time.monotonic()``) in the server's time, early enough that a script
        the server runs before it has its answer read before ``until``; None while the offset
        is unknown."""
        if self._offset is None:
            return None
        return until + self._offset - self._uncertainty() - MARGIN_SECONDS

    async def read(self, server_time: Callable[[], Awaitable[tuple[int, int]]]) -> None:
        """Read the server's ``TIME`` (``server_time()``, seconds and microseconds)."""
        sent = time.monotonic()
        self._tried_at = sent
        seconds, microseconds = await server_time()
        received = time.monotonic()
        error = (received - sent) / 2
        if self._offset is not None and error > self._uncertainty():
            return  # the reading kept is still the more precise
        self._offset = seconds + microseconds / 1e6 - (sent + received) / 2
        self._error = error
        self._read_at = received

    def _uncertainty(self) -> float:
        return self._error + DRIFT_PER_SECOND * (time.monotonic() - self._read_at)


TimeReader = Callable[[], Awaitable[tuple[int, int]]]


class ServerClocks:
    """The clocks of a cluster's masters, by node name, read together in the background;
    ``readers()`` gives each master's ``TIME`` by its name."""

    def __init__(self, readers: Callable[[], dict[str, TimeReader]]) -> None:
        self._readers = readers
        self._clocks: dict[str, ServerClock] = {}
        self._reading: asyncio.Task[None] | None = None

    def deadline(self, name: str | None, until: float) -> float | None:
        """``until`` in the clock of the master ``name``; for one not read yet, the earliest
        in the others' (and a reading of them all is started)."""
        clock = self._clocks.get(name) if name is not None else None
        if clock is None or clock.due():
            self.read_later()
        deadline = clock.deadline(until) if clock is not None else None
        if deadline is None:
            others = (other.deadline(until) for other in self._clocks.values())
            deadline = min((d for d in others if d is not None), default=None)
        return deadline

    async def read(self) -> None:
        for name, server_time in self._readers().items():
            await self._clocks.setdefault(name, ServerClock()).read(server_time)

    def read_later(self) -> None:
        if self._reading is None or self._reading.done():
            self._reading = asyncio.get_running_loop().create_task(self._read_quietly())

    async def close(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
            await asyncio.wait([self._reading])

    async def _read_quietly(self) -> None:
        try:
            async with asyncio.timeout(STEP_DEADLINE_SECONDS * 2):
                await self.read()
        except UNAVAILABLE as error:
            # Each reading is due again in a minute; meanwhile the last one serves.
            store_log.info("Redis Cluster: a clock was not read: %s", type(error).__name__)
