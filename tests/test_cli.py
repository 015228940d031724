"""The operator's CLI end to end: ``python -m auth_refresh`` and the console script, in
subprocesses, against real keys and real stores."""

import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
import redis

from auth_refresh import AuthenticationModule, RotationOutcome
from auth_refresh.settings import SUPPORTED_ALGORITHMS
from auth_refresh.stores.postgres_schema import SCHEMA_VERSION as POSTGRES_SCHEMA_VERSION
from auth_refresh.stores.redis_cluster_layout import LAYOUT_VERSION as CLUSTER_LAYOUT_VERSION
from auth_refresh.stores.redis_layout import LAYOUT_VERSION
from auth_refresh.stores.sqlite_schema import SCHEMA_VERSION
from store_fixtures import Family, opened, running_redis
from test_store_migrations import DATA, load_v1_keys

pytestmark = [pytest.mark.anyio, pytest.mark.processes]

CONSOLE_SCRIPT = Path(sys.executable).parent / "auth-refresh"


def run_cli(
    *arguments: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auth_refresh", *arguments],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def exported_settings(output: str) -> dict[str, str]:
    """The ``export NAME=value`` lines, as a shell would read them."""
    settings = {}
    for line in output.splitlines():
        if line.startswith("export "):
            [assignment] = shlex.split(line.removeprefix("export "))
            name, _, value = assignment.partition("=")
            settings[name] = value
    return settings


@pytest.mark.parametrize("algorithm", SUPPORTED_ALGORITHMS)
def test_keys_generate_prints_settings_that_sign_and_verify(
    algorithm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_cli("keys", "generate", "--algorithm", algorithm, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    settings = exported_settings(result.stdout)
    assert set(settings) == {
        "JWT_MODULE_ACCESS_KEYS",
        "JWT_MODULE_ACCESS_SIGNING_KID",
        "JWT_MODULE_REFRESH_KEYS",
        "JWT_MODULE_REFRESH_SIGNING_KID",
    }
    monkeypatch.delenv("JWT_MODULE_ACCESS_SECRET")
    monkeypatch.delenv("JWT_MODULE_REFRESH_SECRET")
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    authentication = AuthenticationModule.for_root()
    pair = authentication.issue_token_service.response_payload("user-1")
    verify = authentication.verify_token_service
    assert verify.access_token(pair["accessToken"])["sub"] == "user-1"
    assert verify.refresh_token(pair["refreshToken"])["sub"] == "user-1"
    private_keys = sorted(tmp_path.glob("*.pem"))
    if algorithm.startswith("HS"):
        assert private_keys == []
    else:
        secret_files = [path for path in private_keys if not path.name.endswith(".pub.pem")]
        assert len(secret_files) == 2
        assert all(path.stat().st_mode & 0o777 == 0o600 for path in secret_files)


def test_keys_generate_never_overwrites_a_key(tmp_path: Path) -> None:
    arguments = ("keys", "generate", "--algorithm", "ES256", "--kid", "2026-1")
    assert run_cli(*arguments, cwd=tmp_path).returncode == 0
    before = (tmp_path / "access-2026-1.pem").read_bytes()
    again = run_cli(*arguments, cwd=tmp_path)
    assert again.returncode == 1
    assert "exists" in again.stderr
    assert (tmp_path / "access-2026-1.pem").read_bytes() == before


def test_the_console_script_runs_the_same_commands(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(CONSOLE_SCRIPT), "keys", "generate", "--algorithm", "HS256", "--token-type", "access"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert set(exported_settings(result.stdout)) == {
        "JWT_MODULE_ACCESS_KEYS",
        "JWT_MODULE_ACCESS_SIGNING_KID",
    }


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_sessions_revoke_subject_logs_the_user_out_everywhere(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path / 'families.db'}" if kind == "sqlite" else ""
    if kind == "redis":
        url = request.getfixturevalue("redis_url")
    async with opened(url) as store:
        phone, laptop = Family(store, "user-7"), Family(store, "user-7")
        someone_else = Family(store, "user-8")
        for family in (phone, laptop, someone_else):
            await family.start()

    result = run_cli(
        "sessions", "revoke-subject", "user-7", cwd=tmp_path, env={"AUTH_REFRESH_STORE_URL": url}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("revoked 2 live sessions of 'user-7' in ")

    async with opened(url) as store:
        for family in (phone, laptop, someone_else):
            family.store = store
        assert (await phone.rotate(phone.first_token))[0] is RotationOutcome.REVOKED
        assert (await laptop.rotate(laptop.first_token))[0] is RotationOutcome.REVOKED
        assert (await someone_else.rotate(someone_else.first_token))[0] is RotationOutcome.ROTATED


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_sessions_list_shows_a_users_live_sessions_newest_first(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path / 'families.db'}" if kind == "sqlite" else ""
    if kind == "redis":
        url = request.getfixturevalue("redis_url")
    async with opened(url) as store:
        phone, laptop, ended = Family(store, "user-9"), Family(store, "user-9"), Family(store)
        laptop.now = phone.now + 60
        await phone.start(user_agent="Phone\nForged line")
        await laptop.start(user_agent="Laptop/2.0", client_ip="192.0.2.1")
        ended.subject = "user-9"
        await ended.start()
        await store.revoke_family(ended.id)

    env = {"AUTH_REFRESH_STORE_URL": url}
    result = run_cli("sessions", "list", "user-9", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split() == [
        "SESSION", "STARTED", "(UTC)", "LAST", "REFRESHED", "(UTC)", "CLIENT", "IP", "USER-AGENT"
    ]  # fmt: skip
    assert [line.split()[0] for line in lines] == [laptop.session_id, phone.session_id]
    # Columns line up under the header, one line per session whatever its User-Agent.
    ip, agent = header.index("CLIENT IP"), header.index("USER-AGENT")
    assert [line[ip:agent].strip() for line in lines] == ["192.0.2.1", "-"]
    assert [line[agent:] for line in lines] == ["Laptop/2.0", "Phone\\nForged line"]
    empty = run_cli("sessions", "list", "nobody", cwd=tmp_path, env=env)
    assert "no live session of 'nobody'" in empty.stdout


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("memory://", "lives inside the application's process"),
        ("mysql://localhost/db", "AUTH_REFRESH_STORE_URL"),
        ("postgresql://127.0.0.1:1/db", "The token store is unavailable"),
        ("sqlite:////nonexistent/dir/families.db", "directory does not exist"),
    ],
)
def test_sessions_revoke_subject_refuses_a_store_it_cannot_reach(
    url: str, message: str, tmp_path: Path
) -> None:
    result = run_cli(
        "sessions", "revoke-subject", "user-7", cwd=tmp_path, env={"AUTH_REFRESH_STORE_URL": url}
    )
    assert result.returncode == 1
    assert message in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_a_command_is_required(tmp_path: Path) -> None:
    result = run_cli(cwd=tmp_path)
    assert result.returncode == 2
    assert "usage: auth-refresh" in result.stderr


def test_store_migrate_brings_a_first_schema_sqlite_file_to_this_release(tmp_path: Path) -> None:
    path = tmp_path / "families.db"
    shutil.copy(DATA / "schema-v1.db", path)
    url = f"sqlite:///{path}"
    result = run_cli("store", "migrate", cwd=tmp_path, env={"AUTH_REFRESH_STORE_URL": url})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{url}: schema version {SCHEMA_VERSION}"
    with closing(sqlite3.connect(path)) as migrated:
        assert migrated.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert b"eyJ" not in path.read_bytes()


def test_store_migrate_brings_first_layout_redis_keys_to_this_release(tmp_path: Path) -> None:
    with running_redis(tmp_path) as server, redis.Redis.from_url(server.url) as client:
        load_v1_keys(client)
        result = run_cli(
            "store", "migrate", cwd=tmp_path, env={"AUTH_REFRESH_STORE_URL": server.url}
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().endswith(f": schema version {LAYOUT_VERSION}")
        assert client.get("auth-refresh:schema") == str(LAYOUT_VERSION).encode()
        assert client.keys("auth-refresh:subject:*") == []


def test_store_migrate_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "families.db"
    with closing(sqlite3.connect(path)) as newer:
        newer.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    env = {"AUTH_REFRESH_STORE_URL": f"sqlite:///{path}"}
    result = run_cli("store", "migrate", cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert "newer than" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("fixture", "version"),
    [("postgres_url", POSTGRES_SCHEMA_VERSION), ("redis_cluster_url", CLUSTER_LAYOUT_VERSION)],
)
def test_store_migrate_reports_the_scale_out_stores_versions(
    fixture: str, version: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url: str = request.getfixturevalue(fixture)
    result = run_cli("store", "migrate", cwd=tmp_path, env={"AUTH_REFRESH_STORE_URL": url})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(f": schema version {version}")
