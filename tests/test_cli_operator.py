"""The CLI as an operator meets it: store URLs printed without passwords, reading commands that
never create a store, counts, headers and defaults said, every error one line and status 1."""

import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
import redis
from redis.cluster import RedisCluster

from auth_refresh.settings import DEFAULT_STORE_URL
from servers import free_port
from store_fixtures import Family, opened, running_redis

pytestmark = [pytest.mark.anyio, pytest.mark.processes]

SECRET = "hunter2-s3cret"


def run_cli(*arguments: str, cwd: Path, store_url: str | None) -> subprocess.CompletedProcess[str]:
    """``auth-refresh ARGUMENTS`` with ``AUTH_REFRESH_STORE_URL`` as given (None: unset)."""
    env = {name: value for name, value in os.environ.items() if name != "AUTH_REFRESH_STORE_URL"}
    if store_url is not None:
        env["AUTH_REFRESH_STORE_URL"] = store_url
    return subprocess.run(
        [sys.executable, "-m", "auth_refresh", *arguments],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("auth-refresh: ")
    return line


def test_the_store_url_is_printed_without_its_password(tmp_path: Path) -> None:
    with running_redis(tmp_path) as server:
        with redis.Redis.from_url(server.url) as client:
            client.config_set("requirepass", SECRET)
        address = server.url.removeprefix("redis://")
        for url in (
            f"redis://:{SECRET}@{address}",
            f"redis://default:{SECRET}@{address}",
            f"redis://{address}?password={SECRET}",
        ):
            for command in (("store", "migrate"), ("sessions", "list", "user-1")):
                result = run_cli(*command, cwd=tmp_path, store_url=url)
                assert result.returncode == 0, result.stderr
                assert SECRET not in result.stdout + result.stderr
                assert "***" in result.stdout
            listed = run_cli("sessions", "list", "user-1", cwd=tmp_path, store_url=url)
            assert "no live session of 'user-1' in redis://" in listed.stdout


def test_the_postgresql_url_is_printed_without_its_password(
    tmp_path: Path, postgres_url: str
) -> None:
    # The test server trusts local connections: the password is given, and not needed.
    url = f"{postgres_url}?password={SECRET}&application_name=cli"
    result = run_cli("store", "migrate", cwd=tmp_path, store_url=url)
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert "?password=***&application_name=cli: schema version" in result.stdout


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://user:{SECRET}@127.0.0.1:{{port}}/db",
        f"postgresql://user@127.0.0.1:{{port}}/db?password={SECRET}",
        f"postgresql://user@127.0.0.1:{{port}}/db?sslpassword={SECRET}&sslmode=bogus",
        f"redis://:{SECRET}@127.0.0.1:{{port}}/0",
        f"redis://127.0.0.1:{{port}}/0?password={SECRET}",
        f"rediss://:{SECRET.replace('-', '%2D')}@127.0.0.1:{{port}}/0",
        f"redis-cluster://:{SECRET}@127.0.0.1:{{port}}",
        f"postgresql://user:{SECRET}@[::1/db",  # no URL at all
        f"postgresql://user:{SECRET}@127.0.0.1:99999/db",
    ],
)
def test_an_unreachable_store_is_one_line_without_its_password(url: str, tmp_path: Path) -> None:
    for command in (("store", "migrate"), ("sessions", "revoke-subject", "user-1")):
        result = run_cli(*command, cwd=tmp_path, store_url=url.format(port=free_port()))
        line = assert_one_line_error(result)
        assert SECRET not in line
        assert SECRET.replace("-", "%2D") not in line


@pytest.mark.parametrize("store_url", [None, "sqlite:///families.db", "sqlite:///sub/../x.db"])
@pytest.mark.parametrize(
    "command", [("sessions", "list", "user-1"), ("sessions", "revoke-subject", "user-1")]
)
def test_reading_commands_never_create_a_store(
    store_url: str | None, command: tuple[str, ...], tmp_path: Path
) -> None:
    (tmp_path / "sub").mkdir()
    result = run_cli(*command, cwd=tmp_path, store_url=store_url)
    line = assert_one_line_error(result)
    assert f"no store at {store_url or DEFAULT_STORE_URL}" in line
    assert "revoked" not in line
    assert sorted(path.name for path in tmp_path.iterdir()) == ["sub"]


async def stored_names(url: str) -> list[str]:
    """What a server store's URL holds: its keys, or its database's tables."""
    if url.startswith("postgresql://"):
        connection = await asyncpg.connect(url)
        try:
            rows = await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = $1", "public"
            )
        finally:
            await connection.close()
        return [row["tablename"] for row in rows]
    if url.startswith("redis-cluster://"):
        host, port = url.removeprefix("redis-cluster://").split(",")[0].split(":")
        with RedisCluster(host=host, port=int(port)) as cluster:
            return [str(key) for key in cluster.keys(target_nodes=RedisCluster.PRIMARIES)]
    with redis.Redis.from_url(url) as client:
        return [str(key) for key in client.scan_iter()]


@pytest.mark.parametrize("store_url", ["postgres", "redis", "redis-cluster"], indirect=True)
async def test_reading_commands_never_create_a_server_store(store_url: str, tmp_path: Path) -> None:
    # The PostgreSQL test server trusts local connections: the password is given, not needed.
    url = f"{store_url}?password={SECRET}" if store_url.startswith("postgresql") else store_url
    for command in (("sessions", "list", "user-1"), ("sessions", "revoke-subject", "user-1")):
        line = assert_one_line_error(run_cli(*command, cwd=tmp_path, store_url=url))
        assert f"no store at {url.replace(SECRET, '***')}: " in line
        assert "revoked" not in line
        assert await stored_names(store_url) == []
    # Once made, the store is found.
    assert run_cli("store", "migrate", cwd=tmp_path, store_url=url).returncode == 0
    listed = run_cli("sessions", "list", "user-1", cwd=tmp_path, store_url=url)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("no live session of 'user-1' in ")


def test_store_migrate_creates_the_store_it_is_asked_to(tmp_path: Path) -> None:
    result = run_cli("store", "migrate", cwd=tmp_path, store_url=None)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "auth-refresh.db").exists()
    listed = run_cli("sessions", "list", "user-1", cwd=tmp_path, store_url=None)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == f"no live session of 'user-1' in {DEFAULT_STORE_URL}\n"


async def test_revoke_subject_says_how_many_live_sessions_it_ended(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'families.db'}"
    async with opened(url) as store:
        families = [Family(store, "user-7") for _ in range(4)]
        for family in [*families, Family(store, "user-8")]:
            await family.start()
        await store.revoke_family(families[0].id)
    first = run_cli("sessions", "revoke-subject", "user-7", cwd=tmp_path, store_url=url)
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"revoked 3 live sessions of 'user-7' in {url}\n"
    again = run_cli("sessions", "revoke-subject", "user-7", cwd=tmp_path, store_url=url)
    assert again.stdout == f"revoked 0 live sessions of 'user-7' in {url}\n"
    other = run_cli("sessions", "revoke-subject", "user-8", cwd=tmp_path, store_url=url)
    assert other.stdout == f"revoked 1 live session of 'user-8' in {url}\n"


def test_help_says_the_defaults(tmp_path: Path) -> None:
    generate = run_cli("keys", "generate", "--help", cwd=tmp_path, store_url=None)
    assert "(default: EdDSA)" in generate.stdout
    assert "(default: .)" in generate.stdout
    for command in (("sessions", "list"), ("sessions", "revoke-subject"), ("store", "migrate")):
        helped = run_cli(*command, "--help", cwd=tmp_path, store_url=None)
        assert helped.returncode == 0
        assert f"(default:{DEFAULT_STORE_URL})" in "".join(helped.stdout.split())


@pytest.mark.parametrize("store_url", ["", "  "])
def test_an_empty_store_url_is_called_empty(store_url: str, tmp_path: Path) -> None:
    result = run_cli("sessions", "list", "user-1", cwd=tmp_path, store_url=store_url)
    line = assert_one_line_error(result)
    assert "AUTH_REFRESH_STORE_URL is empty" in line
    assert "must start with" not in line
