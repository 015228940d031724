"""The Redis server's clock as the store sees it (``redis_clock``): a step's deadline written in
the server's time is early enough whatever the skew between the hosts, and a reading taken over
a slow round trip (a server that hung while it answered) does not replace a precise one."""

from __future__ import annotations

import asyncio
import time

import pytest

from auth_refresh.stores.redis_clock import (
    MARGIN_SECONDS,
    RETRY_SECONDS,
    ServerClock,
    TimeReader,
)

pytestmark = pytest.mark.anyio

SKEW = 3600.0  # the server's clock an hour ahead of this host's


def server_time(skew: float, hangs: float = 0.0) -> TimeReader:
    """A server's TIME (seconds, microseconds), ``skew`` ahead of the epoch seen here, read
    after ``hangs`` seconds and answered at once."""

    async def read() -> tuple[int, int]:
        await asyncio.sleep(hangs)
        now = time.time() + skew
        return int(now), int(now % 1 * 1_000_000)

    return read


def in_server_time(monotonic: float, skew: float) -> float:
    return time.time() + skew + (monotonic - time.monotonic())


async def test_a_deadline_is_written_in_the_servers_time_and_early() -> None:
    clock = ServerClock()
    assert clock.deadline(time.monotonic() + 1.5) is None  # not read yet: no deadline
    await clock.read(server_time(SKEW))
    until = time.monotonic() + 1.5
    deadline = clock.deadline(until)
    assert deadline is not None
    exact = in_server_time(until, SKEW)
    assert exact - MARGIN_SECONDS - 0.1 < deadline <= exact - MARGIN_SECONDS


async def test_a_reading_over_a_slow_round_trip_does_not_replace_a_precise_one() -> None:
    clock = ServerClock()
    await clock.read(server_time(SKEW))
    until = time.monotonic() + 1.5
    before = clock.deadline(until)
    # The server hung for a second while answering: its time could be anywhere in that second.
    await clock.read(server_time(SKEW + 5, hangs=1.0))
    assert clock.deadline(until) == pytest.approx(before, abs=0.01)
    # A precise reading replaces it (the server's clock was set).
    await clock.read(server_time(SKEW + 5))
    after = clock.deadline(until)
    assert after is not None
    assert before is not None
    assert after == pytest.approx(before + 5, abs=0.1)


async def test_a_first_reading_over_a_slow_round_trip_is_taken_early_enough() -> None:
    clock = ServerClock()
    await clock.read(server_time(SKEW, hangs=0.5))
    until = time.monotonic() + 1.5
    deadline = clock.deadline(until)
    assert deadline is not None
    # The server read its clock at the end of the round trip: still before the step ends.
    assert deadline <= in_server_time(until, SKEW) - MARGIN_SECONDS
    # It is read again in a second, not in a minute.
    await asyncio.sleep(RETRY_SECONDS)
    assert clock.due()
