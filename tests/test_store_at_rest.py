"""No usable token at rest: after logins, refreshes and repeats within the grace window, every
byte of the SQLite files, every Redis and Redis Cluster key and every PostgreSQL row holds no
JWT and no token id, and the SQLite files are their owner's only. A copy of the store is no
session."""

from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path

import httpx
import pytest
import redis

from auth_refresh import PasswordStorageService
from conftest import InMemoryUsers, serve
from factories import login
from postgres_server import binary
from rotation_app import claims_of, refresh, rotating_app
from store_fixtures import running_redis

# Most tests here start a server of their own: make quick leaves them out.
pytestmark = [pytest.mark.anyio, pytest.mark.servers]

# Any compact JWS: base64url of a JSON header, a dot, base64url of a JSON payload.
JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}")


async def sessions(client: httpx.AsyncClient) -> list[str]:
    """Several sessions, rotated and repeated within the grace window; every token issued."""
    issued: list[str] = []
    for _ in range(5):
        pair = await login(client)
        issued += pair.values()
        for _ in range(3):
            first = await refresh(client, pair["refreshToken"])
            again = await refresh(client, pair["refreshToken"])  # a repeat, within the window
            assert first.status_code == again.status_code == 200
            assert first.json() == again.json()
            pair = first.json()
            issued += pair.values()
    return issued


def assert_nothing_usable(stored: bytes, issued: list[str]) -> None:
    assert JWT.search(stored) is None
    for token in issued:
        for secret in (token, claims_of(token)["jti"]):
            assert secret.encode() not in stored


async def test_the_sqlite_files_hold_no_token_and_are_the_owner_s_only(
    users: InMemoryUsers, password_storage: PasswordStorageService, tmp_path: Path
) -> None:
    path = tmp_path / "families.db"
    app, _ = rotating_app(users, password_storage, settings={"store_url": f"sqlite:///{path}"})
    async with serve(app) as client:
        issued = await sessions(client)
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
        modes = {file.name: stat.S_IMODE(file.stat().st_mode) for file in files}
        stored = b"".join(file.read_bytes() for file in files)
    assert modes == {"families.db": 0o600, "families.db-wal": 0o600, "families.db-shm": 0o600}
    assert len(stored) > 4096  # the families are in there
    assert_nothing_usable(stored, issued)


async def test_a_sqlite_file_others_could_read_is_made_the_owner_s(
    users: InMemoryUsers, password_storage: PasswordStorageService, tmp_path: Path
) -> None:
    path = tmp_path / "families.db"
    path.touch(mode=0o644)
    path.chmod(0o644)
    app, _ = rotating_app(users, password_storage, settings={"store_url": f"sqlite:///{path}"})
    async with serve(app) as client:
        await login(client)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_the_redis_keys_hold_no_token(
    users: InMemoryUsers, password_storage: PasswordStorageService, tmp_path: Path
) -> None:
    with running_redis(tmp_path) as server:
        app, _ = rotating_app(users, password_storage, settings={"store_url": server.url})
        async with serve(app) as client:
            issued = await sessions(client)
        with redis.Redis.from_url(server.url) as reader:
            keys = list(reader.scan_iter())
            # DUMP: the key's whole value as Redis serialises it, whatever its type.
            stored = b"".join(key + (reader.dump(key) or b"") for key in keys)  # type: ignore[operator]
    assert len(keys) >= 5
    assert_nothing_usable(stored, issued)


def every_family_row(url: str) -> bytes:
    return subprocess.run(
        [binary("psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", url, "-c",
         "SELECT row_to_json(families)::text FROM auth_refresh_families families"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip


async def test_the_postgres_rows_hold_no_token(
    users: InMemoryUsers, password_storage: PasswordStorageService, postgres_url: str
) -> None:
    app, _ = rotating_app(users, password_storage, settings={"store_url": postgres_url})
    async with serve(app) as client:
        issued = await sessions(client)
    rows = every_family_row(postgres_url)
    assert len(rows.splitlines()) == 5
    assert_nothing_usable(rows, issued)


async def test_the_redis_cluster_keys_hold_no_token(
    users: InMemoryUsers, password_storage: PasswordStorageService, redis_cluster_url: str
) -> None:
    app, _ = rotating_app(users, password_storage, settings={"store_url": redis_cluster_url})
    async with serve(app) as client:
        issued = await sessions(client)
    seed = redis_cluster_url.removeprefix("redis-cluster://").split(",")[0]
    host, port = seed.rsplit(":", 1)
    with redis.RedisCluster(host=host, port=int(port)) as reader:
        # Every key of every primary: scan_iter walks them all.
        keys = list(reader.scan_iter())
        stored = b"".join(key + (reader.dump(key) or b"") for key in keys)  # type: ignore[operator]
    assert len(keys) >= 5
    assert_nothing_usable(stored, issued)
