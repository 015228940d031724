"""The by-hand anchors (issue 20): each refresh token made single-use without this library, with
the driver the library's store uses, in the shortest correct code a user would write.

Each keeps one entry per live refresh token, keyed by its jti and holding its subject: minting
adds it, a refresh swaps it for its successor's in one atomic step, so of two requests
presenting the same token one gets a pair. Nothing more: no reuse detection, grace window,
session lifetime or revocation.
"""

from __future__ import annotations

import asyncio
import sqlite3
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from bench.common import REFRESH_LIFETIME_SECONDS

CREATE_TABLE = "CREATE TABLE IF NOT EXISTS refresh_tokens (jti TEXT PRIMARY KEY, subject TEXT)"
KEY_PREFIX = "by-hand:rt:"


class Tokens(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def add(self, jti: str, subject: str) -> None: ...

    async def rotate(self, jti: str, successor: str) -> bool:
        """Consume ``jti`` and make ``successor`` live; False when ``jti`` was not live."""
        ...


def tokens(store: str, url: str) -> Tokens:
    """The by-hand anchor of ``store`` on the store URL the library would be given."""
    if store == "sqlite":
        return SqliteTokens(url.removeprefix("sqlite:///"))
    if store == "postgres":
        return PostgresTokens(url)
    if store in ("redis", "redis-cluster"):
        return RedisTokens(url, cluster=store == "redis-cluster")
    raise ValueError(f"no by-hand anchor for {store!r}")


class SqliteTokens:
    """sqlite3 on a thread of its own (one connection, autocommit): one UPDATE per rotation."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.thread = ThreadPoolExecutor(1)

    async def open(self) -> None:
        # Used from self.thread only, once opened.
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        # The library store's durability: a write-ahead log synced at checkpoints.
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(CREATE_TABLE)

    async def close(self) -> None:
        self.thread.shutdown()
        self.db.close()

    async def _execute(self, sql: str, *parameters: str) -> int:
        def execute() -> int:
            return self.db.execute(sql, parameters).rowcount

        return await asyncio.get_running_loop().run_in_executor(self.thread, execute)

    async def add(self, jti: str, subject: str) -> None:
        await self._execute("INSERT INTO refresh_tokens VALUES (?, ?)", jti, subject)

    async def rotate(self, jti: str, successor: str) -> bool:
        updated = await self._execute(
            "UPDATE refresh_tokens SET jti = ? WHERE jti = ?", successor, jti
        )
        return updated == 1


class PostgresTokens:
    """asyncpg's pool: one UPDATE per rotation; of two at once, the second matches no row."""

    def __init__(self, url: str) -> None:
        # The library's own parameters (auth_refresh_*) are not the server's.
        parts = urllib.parse.urlsplit(url)
        query = [
            (name, value)
            for name, value in urllib.parse.parse_qsl(parts.query)
            if not name.startswith("auth_refresh_")
        ]
        self.dsn = parts._replace(query=urllib.parse.urlencode(query)).geturl()

    async def open(self) -> None:
        import asyncpg

        self.pool = await asyncpg.create_pool(self.dsn)
        await self.pool.execute(CREATE_TABLE)

    async def close(self) -> None:
        await self.pool.close()

    async def add(self, jti: str, subject: str) -> None:
        await self.pool.execute("INSERT INTO refresh_tokens VALUES ($1, $2)", jti, subject)

    async def rotate(self, jti: str, successor: str) -> bool:
        status = await self.pool.execute(
            "UPDATE refresh_tokens SET jti = $2 WHERE jti = $1", jti, successor
        )
        return status == "UPDATE 1"


class RedisTokens:
    """redis-py asyncio, one server or a cluster: GETDEL of the token's key consumes it once,
    then SET of its successor's (two keys, so no Lua: they may live on different nodes)."""

    def __init__(self, url: str, *, cluster: bool) -> None:
        self.url = url
        self.cluster = cluster

    async def open(self) -> None:
        from redis.asyncio import Redis
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        self.client: Redis | RedisCluster
        if self.cluster:
            # redis-cluster://host:port,host:port
            addresses = urllib.parse.urlsplit(self.url).netloc.split(",")
            nodes = [
                ClusterNode(host, int(port))
                for host, _, port in (address.rpartition(":") for address in addresses)
            ]
            self.client = RedisCluster(startup_nodes=nodes)
        else:
            self.client = Redis.from_url(self.url)

    async def close(self) -> None:
        await self.client.aclose()

    async def add(self, jti: str, subject: str) -> None:
        await self.client.set(KEY_PREFIX + jti, subject, ex=REFRESH_LIFETIME_SECONDS)

    async def rotate(self, jti: str, successor: str) -> bool:
        subject = await self.client.getdel(KEY_PREFIX + jti)
        if subject is None:
            return False
        await self.client.set(KEY_PREFIX + successor, subject, ex=REFRESH_LIFETIME_SECONDS)
        return True
