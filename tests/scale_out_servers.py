"""The measurements of docs/scaling.md that are not requests per second (issue 14); ``make
bench`` measures those, with the same servers (bench/scale_out.py).

    python tests/scale_out_servers.py sizes [--sessions 20000]
        Bytes per session in each store (SQLite file, Redis and Redis Cluster memory, PostgreSQL
        table with its indexes), and the store server's CPU time per refresh.
    python tests/scale_out_servers.py drivers [--seconds 5]
        asyncpg against psycopg 3 (pip install 'psycopg[binary,pool]') on the PostgreSQL
        store's refresh statement, alternating, on one event loop; and asyncpg again with
        synchronous_commit on (the store's default).

Each measurement writes bench/results/<kind>-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import redis  # noqa: E402
from bench.scale_out import pinned_to  # noqa: E402

from auth_refresh import (  # noqa: E402
    RefreshTokenStore,
    SessionStart,
    StoreUnavailableError,
    Successor,
    TokenPair,
    open_store,
)
from auth_refresh.stores.sealing import session_id_of  # noqa: E402
from postgres_server import PostgresServer, running_postgres  # noqa: E402
from redis_cluster import cluster_url, running_cluster  # noqa: E402
from store_fixtures import running_redis  # noqa: E402

RESULTS = ROOT / "bench" / "results"
IDLE = 7 * 86400.0
LIFETIME = 30 * 86400.0
MAX_SESSIONS = 100  # the setting's default
# What a real login answers with (HS256, the tutorial's claims): the sizes matter here.
ACCESS_TOKEN_BYTES = 260
REFRESH_TOKEN_BYTES = 330
# A session's client label, as a desktop browser sends it (what the store keeps per session).
USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)


def load_cpu() -> int | None:
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[1] if len(cpus) > 1 else None


# -- bytes per session and server CPU per refresh ------------------------------------------------


def token_pair(token_id: str) -> TokenPair:
    filler = token_id * 40
    return {
        "accessToken": ("eyJ" + filler)[:ACCESS_TOKEN_BYTES],
        "refreshToken": ("eyJ" + filler[::-1])[:REFRESH_TOKEN_BYTES],
    }


async def login(store: RefreshTokenStore, subject: str, now: float) -> tuple[str, str]:
    """A new family of ``subject``'s, with a browser's session: its id and its live token's."""
    family, token = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    await store.start_family(
        family,
        subject,
        token,
        token_expires_at=now + IDLE,
        now=now,
        absolute_lifetime=LIFETIME,
        session=SessionStart(session_id_of(family), USER_AGENT),
        max_sessions=MAX_SESSIONS,
    )
    return family, token


async def refresh(store: RefreshTokenStore, family: str, token: str, now: float) -> str:
    """``token`` rotated, as a real refresh's pair; the successor's id."""
    successor_id = secrets.token_urlsafe(16)
    offered = Successor(successor_id, token_pair(successor_id), now + IDLE)
    await store.rotate(family, token, offered, now=now, grace_seconds=5, absolute_lifetime=LIFETIME)
    return successor_id


async def fill(store: RefreshTokenStore, sessions: int) -> None:
    """``sessions`` logins, each refreshed once (the grace window's pair kept, as in use)."""
    now = time.time()

    async def one(index: int) -> None:
        await refresh(store, *await login(store, f"user-{index}", now), now)

    for start in range(0, sessions, 50):
        await asyncio.gather(*(one(index) for index in range(start, min(start + 50, sessions))))


async def refresh_many(store: RefreshTokenStore, refreshes: int) -> None:
    now = time.time()
    family, token = await login(store, "cpu", now)
    for _ in range(refreshes):
        token = await refresh(store, family, token, now)


async def with_store(url: str, work: Callable[[RefreshTokenStore], Awaitable[None]]) -> None:
    store = open_store(url)
    try:
        # A fresh PostgreSQL database: the store's first steps are 503s while it makes its
        # schema (DDL syncs to disk).
        for _ in range(20):
            try:
                await store.revoke_family("none")
                break
            except StoreUnavailableError:
                await asyncio.sleep(0.5)
        await work(store)
    finally:
        await store.close()


def redis_memory(ports: list[int]) -> int:
    total = 0
    for port in ports:
        with redis.Redis(port=port) as client:
            total += int(client.info("memory")["used_memory"])
    return total


def redis_cpu(ports: list[int]) -> float:
    total = 0.0
    for port in ports:
        with redis.Redis(port=port) as client:
            info = client.info("cpu")
            total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return total


def postgres_cpu(server: PostgresServer) -> float:
    import psutil

    assert server.process is not None
    postmaster = psutil.Process(server.process.pid)
    total = 0.0
    for process in [postmaster, *postmaster.children(recursive=True)]:
        times = process.cpu_times()
        total += times.user + times.system + times.children_user + times.children_system
    return total


def sizes(sessions: int, refreshes: int) -> dict[str, Any]:
    results: dict[str, Any] = {"sessions": sessions, "refreshes_for_cpu": refreshes}
    with tempfile.TemporaryDirectory(prefix="auth-refresh-sizes-") as directory:
        workdir = Path(directory)
        sqlite_path = workdir / "families.db"
        asyncio.run(with_store(f"sqlite:///{sqlite_path}", lambda s: fill(s, sessions)))
        on_disk = sum(path.stat().st_size for path in workdir.glob("families.db*"))
        results["sqlite"] = {"bytes_on_disk": on_disk, "bytes_per_session": on_disk / sessions}

        with running_redis(workdir) as server:
            results["redis"] = measure_redis(server.url, [server.port], sessions, refreshes)
        with running_cluster(workdir) as nodes:
            ports = [node.port for node in nodes]
            results["redis_cluster"] = measure_redis(cluster_url(nodes), ports, sessions, refreshes)
        with running_postgres({}) as postgres:
            results["postgres"] = measure_postgres(postgres, sessions, refreshes)
    return results


def measure_redis(url: str, ports: list[int], sessions: int, refreshes: int) -> dict[str, Any]:
    before = redis_memory(ports)
    asyncio.run(with_store(url, lambda s: fill(s, sessions)))
    grown = redis_memory(ports) - before
    cpu_before = redis_cpu(ports)
    asyncio.run(with_store(url, lambda s: refresh_many(s, refreshes)))
    cpu = redis_cpu(ports) - cpu_before
    return {
        "used_memory_growth": grown,
        "bytes_per_session": grown / sessions,
        "server_cpu_microseconds_per_refresh": cpu / refreshes * 1e6,
    }


def measure_postgres(server: PostgresServer, sessions: int, refreshes: int) -> dict[str, Any]:
    asyncio.run(with_store(server.url, lambda s: fill(s, sessions)))
    server.psql("VACUUM ANALYZE auth_refresh_families")
    table = int(server.psql("SELECT pg_table_size('auth_refresh_families')"))
    total = int(server.psql("SELECT pg_total_relation_size('auth_refresh_families')"))
    cpu_before = postgres_cpu(server)
    asyncio.run(with_store(server.url, lambda s: refresh_many(s, refreshes)))
    cpu = postgres_cpu(server) - cpu_before
    return {
        "table_bytes": table,
        "table_and_indexes_bytes": total,
        "bytes_per_session": total / sessions,
        "server_cpu_microseconds_per_refresh": cpu / refreshes * 1e6,
    }


# -- asyncpg against psycopg 3 ---------------------------------------------------------------------

ROTATE_SQL = "SELECT outcome, family_subject, grace_pair FROM auth_refresh_rotate({})"
CONCURRENCY = 16


async def drive(
    call: Callable[[str, str, str], Awaitable[None]],
    start: Callable[[str, str], Awaitable[None]],
    seconds: float,
) -> dict[str, float]:
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        family, token = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        await start(family, token)
        while time.monotonic() < deadline:
            successor = secrets.token_urlsafe(16)
            began = time.perf_counter()
            await call(family, token, successor)
            latencies.append(time.perf_counter() - began)
            token = successor

    began = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.monotonic() - began
    latencies.sort()
    return {
        "refreshes_per_second": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


async def asyncpg_round(url: str, seconds: float) -> dict[str, float]:
    import asyncpg

    async def reset(connection: Any) -> None:
        pass

    pool = await asyncpg.create_pool(url, min_size=CONCURRENCY, max_size=CONCURRENCY, reset=reset)
    sql = ROTATE_SQL.format(", ".join(f"${i}" for i in range(1, 9)))
    now = time.time()

    async def start(family: str, token: str) -> None:
        await pool.execute(
            "INSERT INTO auth_refresh_families (family_id, subject, created_at, expires_at, "
            "live_token_id, session_id) VALUES ($1, 'drivers', $2, $3, $4, $1)",
            family, now, now + IDLE, token,
        )  # fmt: skip

    async def call(family: str, token: str, successor: str) -> None:
        async with pool.acquire() as connection:
            await connection.fetchrow(
                sql, family, token, successor, json.dumps(token_pair(successor)), now + IDLE,
                now, 5.0, LIFETIME,
            )  # fmt: skip

    try:
        return await drive(call, start, seconds)
    finally:
        await pool.close()


async def psycopg_round(url: str, seconds: float) -> dict[str, float]:
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(
        url, min_size=CONCURRENCY, max_size=CONCURRENCY, open=False,
        kwargs={"autocommit": True, "prepare_threshold": 0},
    )  # fmt: skip
    await pool.open(wait=True)
    sql = ROTATE_SQL.format(", ".join(["%s"] * 8))
    now = time.time()

    async def start(family: str, token: str) -> None:
        async with pool.connection() as connection:
            await connection.execute(
                "INSERT INTO auth_refresh_families (family_id, subject, created_at, expires_at, "
                "live_token_id, session_id) VALUES (%s, 'drivers', %s, %s, %s, %s)",
                (family, now, now + IDLE, token, family),
            )

    async def call(family: str, token: str, successor: str) -> None:
        async with pool.connection() as connection:
            cursor = await connection.execute(
                sql,
                (family, token, successor, json.dumps(token_pair(successor)), now + IDLE, now,
                 5.0, LIFETIME),
            )  # fmt: skip
            await cursor.fetchone()

    try:
        return await drive(call, start, seconds)
    finally:
        await pool.close()


async def one_at_a_time(url: str, refreshes: int) -> dict[str, float]:
    """The store itself, one refresh in flight: what each commit waits for shows whole."""
    latencies: list[float] = []
    unavailable = 0

    async def work(store: RefreshTokenStore) -> None:
        nonlocal unavailable
        now = time.time()
        family, token = await login(store, "one", now)
        for _ in range(refreshes):
            began = time.perf_counter()
            try:
                token = await refresh(store, family, token, now)
            except StoreUnavailableError:
                unavailable += 1
            latencies.append(time.perf_counter() - began)

    await with_store(url, work)
    latencies.sort()
    return {
        "refreshes": refreshes,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "unavailable": unavailable,
    }


def drivers(seconds: float, rounds: int) -> dict[str, Any]:
    import asyncpg
    import psycopg

    results: dict[str, Any] = {
        "concurrency": CONCURRENCY,
        "seconds_per_round": seconds,
        "versions": {"asyncpg": asyncpg.__version__, "psycopg": psycopg.__version__},
        "asyncpg": [],
        "psycopg": [],
        # The store's default is synchronous_commit=on; this is its cost against off.
        "asyncpg_synchronous_commit_on": [],
    }
    with pinned_to(load_cpu()), running_postgres({}) as postgres:
        # The store's first steps create its schema.
        asyncio.run(with_store(postgres.url, lambda store: store.revoke_family("none")))
        with pinned_to(sorted(os.sched_getaffinity(0))[0]):
            # libpq's startup options: both drivers send them the same way.
            url = postgres.url + "?options=-c%20synchronous_commit%3Doff"
            durable = postgres.url + "?options=-c%20synchronous_commit%3Don"
            for _ in range(rounds):
                results["asyncpg"].append(asyncio.run(asyncpg_round(url, seconds)))
                results["psycopg"].append(asyncio.run(psycopg_round(url, seconds)))
                synchronous = asyncio.run(asyncpg_round(durable, seconds))
                results["asyncpg_synchronous_commit_on"].append(synchronous)
            results["one_at_a_time"] = {
                "store_default": asyncio.run(one_at_a_time(postgres.url, 300)),
                "synchronous_commit_on": asyncio.run(
                    one_at_a_time(postgres.url + "?synchronous_commit=on", 300)
                ),
            }
    for driver in ("asyncpg", "psycopg", "asyncpg_synchronous_commit_on"):
        runs = results[driver]
        results[f"{driver}_median"] = {
            key: statistics.median(run[key] for run in runs) for key in runs[0]
        }
    return results


def write(kind: str, results: dict[str, Any]) -> Path:
    results["machine"] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
    }
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{kind}-{stamp}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="kind", required=True)
    measured = commands.add_parser("sizes")
    measured.add_argument("--sessions", type=int, default=20000)
    measured.add_argument("--refreshes", type=int, default=5000)
    compared = commands.add_parser("drivers")
    compared.add_argument("--seconds", type=float, default=5.0)
    compared.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    if options.kind == "sizes":
        path = write("sizes", sizes(options.sessions, options.refreshes))
    else:
        path = write("postgres-drivers", drivers(options.seconds, options.rounds))
    print(path.read_text())
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
