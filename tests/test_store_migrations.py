"""Versioned schemas: a SQLite file, Redis keys and Redis Cluster keys written by the first
releases' stores (tests/data, made with that code) are migrated when opened, keep their
sessions (a repeat within the grace window still gets its pair; listed, refreshed and revoked
like new ones) and keep no token in the clear; data of a newer version is refused with a clear
error."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from auth_refresh import ConfigurationError, RefreshTokenStore, RotationOutcome, Successor, cli
from auth_refresh.stores import redis_migration
from auth_refresh.stores.redis_cluster_layout import LAYOUT_VERSION as CLUSTER_LAYOUT_VERSION
from auth_refresh.stores.redis_layout import LAYOUT_VERSION
from auth_refresh.stores.sealing import open_pair, session_id_of, token_digest
from auth_refresh.stores.sqlite_schema import SCHEMA_VERSION
from auth_refresh.testing import Family, listed
from store_fixtures import opened, running_redis

# Most tests here start a server of their own: make quick leaves them out.
pytestmark = [pytest.mark.anyio, pytest.mark.servers]

DATA = Path(__file__).parent / "data"
# As tests/data/make_schema_v1.py wrote them.
NOW = 2_000_000_000.0
LIFETIME = 30 * 86400.0
ROTATED_PAIR = {
    "accessToken": "eyJhbGciOi.eyJr2access.sig",
    "refreshToken": "eyJhbGciOi.eyJr2refresh.sig",
}


def offered(token_id: str) -> Successor:
    return Successor(
        token_digest(token_id),
        {"accessToken": "sealed-a", "refreshToken": "sealed-r"},
        NOW + 600,
    )


async def rotate(store: RefreshTokenStore, family_id: str, token_id: str) -> tuple[str, object]:
    rotation = await store.rotate(
        family_id,
        token_digest(token_id),
        offered(token_id + "-next"),
        now=NOW + 1,
        grace_seconds=30,
        absolute_lifetime=LIFETIME,
    )
    return rotation.outcome.value, rotation.pair


async def assert_migrated_sessions_work(store: RefreshTokenStore) -> None:
    # Every family is a session now, under the digest of its id, without a client label.
    sessions = await listed(store, "alice", now=NOW + 1)
    assert {session.session_id for session in sessions} == {
        session_id_of("fam-rotated"),
        session_id_of("fam-fresh"),
    }
    assert all(session.user_agent is None for session in sessions)
    assert not await store.session_active(session_id_of("fam-revoked"), now=NOW + 1)
    # The consumed token of "rotated", within its grace window: the same pair, opened with it.
    outcome, pair = await rotate(store, "fam-rotated", "rotated-1")
    assert outcome == RotationOutcome.GRACE.value
    assert open_pair(pair, "rotated-1", "fam-rotated") == ROTATED_PAIR  # type: ignore[arg-type]
    assert (await rotate(store, "fam-rotated", "rotated-2"))[0] == RotationOutcome.ROTATED.value
    assert (await rotate(store, "fam-fresh", "fresh-1"))[0] == RotationOutcome.ROTATED.value
    assert (await rotate(store, "fam-revoked", "revoked-1"))[0] == RotationOutcome.REVOKED.value
    # revoke_subject reaches the migrated families.
    assert await store.session_active(session_id_of("fam-fresh"), now=NOW + 1)
    assert await store.revoke_subject("alice", now=NOW + 1) == 2
    assert (await rotate(store, "fam-fresh", "fresh-1-next"))[0] == RotationOutcome.REVOKED.value
    assert not await store.session_active(session_id_of("fam-fresh"), now=NOW + 1)


async def assert_migrated_sessions_end_like_new_ones(store: RefreshTokenStore) -> None:
    """A migrated family's refresh shows in its session, and ending a session (as its owner,
    by logout) takes it out of the list and refuses its tokens."""
    rotated, fresh = session_id_of("fam-rotated"), session_id_of("fam-fresh")
    assert (await rotate(store, "fam-rotated", "rotated-2"))[0] == RotationOutcome.ROTATED.value
    (session,) = [s for s in await listed(store, "alice", now=NOW + 2) if s.session_id == rotated]
    assert session.last_refreshed_at == NOW + 1
    assert await store.revoke_session("alice", rotated, now=NOW + 2)
    assert not await store.session_active(rotated, now=NOW + 2)
    next_token = "rotated-2-next"
    assert (await rotate(store, "fam-rotated", next_token))[0] == RotationOutcome.REVOKED.value
    assert [s.session_id for s in await listed(store, "alice", now=NOW + 2)] == [fresh]
    await store.revoke_family("fam-fresh")  # a logout
    assert not await store.session_active(fresh, now=NOW + 2)
    assert await listed(store, "alice", now=NOW + 2) == []
    assert (await rotate(store, "fam-fresh", "fresh-1"))[0] == RotationOutcome.REVOKED.value


async def test_a_sqlite_file_of_the_first_schema_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "families.db"
    shutil.copy(DATA / "schema-v1.db", path)
    with sqlite3.connect(path) as before:
        assert before.execute("PRAGMA user_version").fetchone() == (0,)
    before.close()
    async with opened(f"sqlite:///{path}") as store:
        await assert_migrated_sessions_work(store)
    # Closed: the WAL is checkpointed into the file and removed.
    stored = path.read_bytes()
    assert b"eyJ" not in stored
    assert b"rotated-1" not in stored
    with sqlite3.connect(path) as after:
        assert after.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    after.close()


V2_TABLE = """CREATE TABLE auth_refresh_families (
    family_id TEXT PRIMARY KEY, subject TEXT NOT NULL, created_at REAL NOT NULL,
    expires_at REAL NOT NULL, live_token_id TEXT NOT NULL, previous_token_id TEXT,
    consumed_at REAL, successor_pair TEXT, revoked INTEGER NOT NULL DEFAULT 0
)"""


def write_v2_family(connection: sqlite3.Connection, family_id: str, subject: str) -> None:
    connection.execute(
        "INSERT INTO auth_refresh_families VALUES (?, ?, ?, ?, ?, NULL, NULL, NULL, 0)",
        (family_id, subject, NOW, NOW + 600, token_digest(family_id + "-1")),
    )


async def test_a_sqlite_file_of_the_second_schema_gets_its_sessions(tmp_path: Path) -> None:
    path = tmp_path / "families.db"
    with sqlite3.connect(path) as before:
        before.execute(V2_TABLE)
        write_v2_family(before, "fam-a", "carol")
        write_v2_family(before, "fam-b", "carol")
        before.execute("PRAGMA user_version = 2")
    before.close()
    async with opened(f"sqlite:///{path}") as store:
        sessions = await listed(store, "carol", now=NOW + 1)
        assert {session.session_id for session in sessions} == {
            session_id_of("fam-a"),
            session_id_of("fam-b"),
        }
        assert (await rotate(store, "fam-a", "fam-a-1"))[0] == RotationOutcome.ROTATED.value
        assert await store.revoke_session("carol", session_id_of("fam-b"), now=NOW + 1)
        assert (await rotate(store, "fam-b", "fam-b-1"))[0] == RotationOutcome.REVOKED.value
    with sqlite3.connect(path) as after:
        assert after.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    after.close()


V3_INDEXES = (
    "CREATE UNIQUE INDEX auth_refresh_families_session ON auth_refresh_families (session_id)",
    "CREATE INDEX auth_refresh_families_subject ON auth_refresh_families (subject)",
    "CREATE INDEX auth_refresh_families_expires_at ON auth_refresh_families (expires_at)",
)


async def test_a_sqlite_file_of_the_third_schema_lists_refreshes_and_revokes(
    tmp_path: Path,
) -> None:
    """Version 3 kept sessions but indexed every family by subject: migrated, its families
    are listed with new ones, refresh, and end by each revocation."""
    path = tmp_path / "families.db"
    with sqlite3.connect(path) as before:
        before.execute(V2_TABLE)
        for family_id in ("fam-a", "fam-b", "fam-c"):
            write_v2_family(before, family_id, "carol")
        columns = ("session_id TEXT NOT NULL DEFAULT ''", "refreshed_at REAL", "user_agent TEXT")
        for column in (*columns, "client_ip TEXT"):
            before.execute(f"ALTER TABLE auth_refresh_families ADD COLUMN {column}")
        for family_id in ("fam-a", "fam-b", "fam-c"):
            before.execute(
                "UPDATE auth_refresh_families SET session_id = ? WHERE family_id = ?",
                (session_id_of(family_id), family_id),
            )
        for index in V3_INDEXES:
            before.execute(index)
        before.execute("PRAGMA user_version = 3")
    before.close()
    async with opened(f"sqlite:///{path}") as store:
        login = Family(store, "carol")
        login.now = NOW + 1
        await login.start()
        sessions = await listed(store, "carol", now=NOW + 1)
        assert [session.session_id for session in sessions] == [
            login.session_id,
            *sorted((session_id_of(f) for f in ("fam-a", "fam-b", "fam-c")), reverse=True),
        ]
        assert (await rotate(store, "fam-a", "fam-a-1"))[0] == RotationOutcome.ROTATED.value
        assert await store.revoke_session("carol", session_id_of("fam-b"), now=NOW + 1)
        assert await store.revoke_other_sessions("carol", login.session_id, now=NOW + 1) == 2
        assert (await rotate(store, "fam-c", "fam-c-1"))[0] == RotationOutcome.REVOKED.value
        assert await store.revoke_subject("carol", now=NOW + 1) == 1
        assert await listed(store, "carol", now=NOW + 1) == []
    with sqlite3.connect(path) as after:
        assert after.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        indexes = {name for (name,) in after.execute("SELECT name FROM sqlite_master")}
    after.close()
    assert "auth_refresh_families_live" in indexes
    assert "auth_refresh_families_subject" not in indexes


async def test_a_sqlite_file_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "families.db"
    async with opened(f"sqlite:///{path}") as store:
        await store.revoke_family("creates-the-file")
    with sqlite3.connect(path) as newer:
        newer.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    newer.close()
    async with opened(f"sqlite:///{path}") as store:
        with pytest.raises(ConfigurationError, match=r"schema version \d+, newer than"):
            await store.revoke_family("any")


def load_v1_keys(client: redis.Redis) -> None:
    for key, entry in json.loads((DATA / "schema-v1-redis.json").read_text()).items():
        if entry["type"] == "hash":
            client.hset(key, mapping=entry["value"])
            client.pexpireat(key, int(float(entry["value"]["expires_at"]) * 1000))
        else:
            client.sadd(key, *entry["value"])
            client.pexpire(key, int(LIFETIME * 1000))


async def test_redis_keys_of_the_first_layout_are_migrated(tmp_path: Path) -> None:
    with running_redis(tmp_path) as server, redis.Redis.from_url(server.url) as client:
        load_v1_keys(client)
        async with opened(server.url) as store:
            await assert_migrated_sessions_work(store)
        assert client.get("auth-refresh:schema") == str(LAYOUT_VERSION).encode()
        assert client.keys("auth-refresh:subject:*") == []
        # Layout 3's index is gone; revoke_subject took the migrated families out of layout 4's.
        assert client.exists("auth-refresh:families:alice", "auth-refresh:sessions:alice") == 0
        keys = list(client.scan_iter())
        stored = b"".join(client.dump(key) or b"" for key in keys)  # type: ignore[operator]
    assert b"eyJ" not in stored
    assert b"rotated-1" not in stored


async def test_redis_families_of_the_first_layout_end_like_new_ones(tmp_path: Path) -> None:
    with running_redis(tmp_path) as server, redis.Redis.from_url(server.url) as client:
        load_v1_keys(client)
        async with opened(server.url) as store:
            assert await store.migrate() == LAYOUT_VERSION  # type: ignore[attr-defined]
            await assert_migrated_sessions_end_like_new_ones(store)


def test_the_cli_lists_a_session_of_the_first_redis_layout_after_store_migrate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The case: `store migrate`, then `sessions list` showed no session.
    with running_redis(tmp_path) as server, redis.Redis.from_url(server.url) as client:
        load_v1_keys(client)
        monkeypatch.setenv("AUTH_REFRESH_STORE_URL", server.url)
        assert cli.main(["store", "migrate"]) == 0
        assert cli.main(["sessions", "list", "alice"]) == 0
    listing = capsys.readouterr().out
    assert session_id_of("fam-rotated") in listing
    assert session_id_of("fam-fresh") in listing


def load_v1_cluster_keys(client: RedisCluster) -> None:
    for key, entry in json.loads((DATA / "schema-v1-redis-cluster.json").read_text()).items():
        if entry["type"] == "hash":
            client.hset(key, mapping=entry["value"])
            client.pexpireat(key, int(float(entry["value"]["expires_at"]) * 1000))
        elif entry["type"] == "set":
            client.sadd(key, *entry["value"])
            client.pexpire(key, int(LIFETIME * 1000))
        elif key.endswith("schema"):
            client.set(key, entry["value"])
        else:  # a session's family
            client.set(key, entry["value"], pxat=int((NOW + LIFETIME) * 1000))


async def test_redis_cluster_families_of_the_first_layout_live_and_end_like_new_ones(
    redis_cluster_url: str,
) -> None:
    seed = redis_cluster_url.removeprefix("redis-cluster://").split(",")[0]
    host, port = seed.rsplit(":", 1)
    with RedisCluster(host=host, port=int(port), decode_responses=True) as client:
        load_v1_cluster_keys(client)
        try:
            async with opened(redis_cluster_url) as store:
                assert await store.migrate() == CLUSTER_LAYOUT_VERSION  # type: ignore[attr-defined]
                sessions = await listed(store, "alice", now=NOW + 1)
                assert {session.session_id for session in sessions} == {
                    session_id_of("fam-rotated"),
                    session_id_of("fam-fresh"),
                }
                assert {session.user_agent for session in sessions} == {"first-schema-agent"}
                assert not await store.session_active(session_id_of("fam-revoked"), now=NOW + 1)
                outcome, pair = await rotate(store, "fam-rotated", "rotated-1")
                assert outcome == RotationOutcome.GRACE.value
                assert open_pair(pair, "rotated-1", "fam-rotated") == ROTATED_PAIR  # type: ignore[arg-type]
                await assert_migrated_sessions_end_like_new_ones(store)
            assert client.exists("auth-refresh:{s:alice}:families") == 0
        finally:
            client.set("auth-refresh:schema", CLUSTER_LAYOUT_VERSION)
            for key in json.loads((DATA / "schema-v1-redis-cluster.json").read_text()):
                if not key.endswith("schema"):
                    client.delete(key)
            client.delete("auth-refresh:{s:alice}:sessions", "auth-refresh:{s:alice}:index")


async def test_redis_keys_of_the_second_layout_get_their_sessions(tmp_path: Path) -> None:
    with running_redis(tmp_path) as server, redis.Redis.from_url(server.url) as client:
        for family_id in ("fam-a", "fam-b"):
            key = "auth-refresh:family:" + family_id
            client.hset(
                key,
                mapping={
                    "subject": "carol",
                    "created_at": repr(NOW),
                    "expires_at": repr(NOW + 600),
                    "live": token_digest(family_id + "-1"),
                    "gen": "0",
                },
            )
            client.pexpireat(key, int((NOW + 600) * 1000))
            client.zadd("auth-refresh:families:carol", {family_id: (NOW + 600) * 1000})
        client.set("auth-refresh:schema", 2)
        async with opened(server.url) as store:
            sessions = await listed(store, "carol", now=NOW + 1)
            assert {session.session_id for session in sessions} == {
                session_id_of("fam-a"),
                session_id_of("fam-b"),
            }
            assert (await rotate(store, "fam-a", "fam-a-1"))[0] == RotationOutcome.ROTATED.value
            assert await store.revoke_session("carol", session_id_of("fam-b"), now=NOW + 1)
            assert (await rotate(store, "fam-b", "fam-b-1"))[0] == RotationOutcome.REVOKED.value
        assert client.get("auth-refresh:schema") == str(LAYOUT_VERSION).encode()
        # The session key expires with its family.
        assert client.pttl("auth-refresh:session:" + session_id_of("fam-b")) > 0


def write_v3_family(
    pipe: redis.client.Pipeline,
    family_id: str,
    *,
    gen: int = 1,
    refreshed_at: float | None = None,
    revoked: bool = False,
) -> None:
    """A family as layout 3 kept it, and its entry in ``carol``'s index."""
    key = "auth-refresh:family:" + family_id
    fields = {
        "subject": "carol",
        "created_at": repr(NOW),
        "expires_at": repr(NOW + 600),
        "live": token_digest(family_id + "-1"),
        "gen": str(gen),
        "sid": session_id_of(family_id),
    }
    if refreshed_at is not None:
        fields["refreshed_at"] = repr(refreshed_at)
    if revoked:
        fields["revoked"] = "1"
    pipe.hset(key, mapping=fields)
    pipe.pexpireat(key, int((NOW + 600) * 1000))
    pipe.set("auth-refresh:session:" + session_id_of(family_id), family_id)
    pipe.zadd("auth-refresh:families:carol", {family_id: (NOW + 600) * 1000})


LEFT_BEHIND = 20_000


async def test_a_layout_3_index_full_of_revoked_families_is_migrated_in_short_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The index: revoked families stayed until they expired. Of the live ones, the
    # most recently refreshed MIGRATED_SESSIONS_MAX stay (2 here).
    monkeypatch.setattr(redis_migration, "MIGRATED_SESSIONS_MAX", 2)
    with running_redis(tmp_path) as server, redis.Redis.from_url(server.url) as client:
        with client.pipeline(transaction=False) as pipe:
            for index in range(LEFT_BEHIND):
                write_v3_family(pipe, f"fam-gone-{index}", revoked=True)
            write_v3_family(pipe, "fam-outdated", gen=0)  # before the last revoke_subject
            write_v3_family(pipe, "fam-least-recent", refreshed_at=NOW - 2)
            write_v3_family(pipe, "fam-recent", refreshed_at=NOW - 1)
            write_v3_family(pipe, "fam-new")
            pipe.set("auth-refresh:generation:carol", 1)
            pipe.set("auth-refresh:schema", 3)
            pipe.execute()
        client.config_set("slowlog-log-slower-than", 50_000)
        client.slowlog_reset()
        async with opened(server.url) as store:
            assert await store.migrate() == LAYOUT_VERSION  # type: ignore[attr-defined]
            assert client.slowlog_get(128) == []
            sessions = await listed(store, "carol", now=NOW + 1)
            assert {session.session_id for session in sessions} == {
                session_id_of("fam-recent"),
                session_id_of("fam-new"),
            }
            for gone in ("fam-least-recent", "fam-outdated", "fam-gone-0"):
                assert (await rotate(store, gone, gone + "-1"))[0] == "revoked"
            assert (await rotate(store, "fam-new", "fam-new-1"))[0] == "rotated"
            assert await store.revoke_subject("carol", now=NOW + 1) == 2
        assert client.exists("auth-refresh:families:carol") == 0
        assert client.get("auth-refresh:schema") == str(LAYOUT_VERSION).encode()


async def test_redis_keys_of_a_newer_layout_are_refused(tmp_path: Path) -> None:
    with running_redis(tmp_path) as server:
        with redis.Redis.from_url(server.url) as client:
            client.set("auth-refresh:schema", LAYOUT_VERSION + 1)
        async with opened(server.url) as store:
            with pytest.raises(ConfigurationError, match=r"layout version \d+, newer than"):
                await store.revoke_family("any")
