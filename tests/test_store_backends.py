"""What each backend promises beyond the contract: Redis answers a refresh in one round trip
and lets keys expire with the tokens; SQLite runs in WAL mode and forgets expired families."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import socket
import sqlite3
import ssl
import struct
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from auth_refresh import (
    ConfigurationError,
    Rotation,
    RotationOutcome,
    StoreUnavailableError,
    open_store,
)
from store_fixtures import GRACE, LIFETIME, Family, opened, running_redis, successor

# Most tests here start a server of their own: make quick leaves them out.
pytestmark = [pytest.mark.anyio, pytest.mark.servers]


MARKER = "end-of-the-refresh"


def watch_commands(url: str, ready: threading.Event, seen: list[dict[str, Any]]) -> None:
    """Every command the server runs, as MONITOR reports it, until the marker."""
    with redis.Redis.from_url(url) as client, client.monitor() as monitor:
        ready.set()
        while True:
            command = monitor.next_command()
            seen.append(command)
            if command["command"] == f"ECHO {MARKER}":
                return


async def test_a_redis_refresh_is_one_round_trip(tmp_path: Path) -> None:
    # A server of its own, so every command it sees is this test's.
    with running_redis(tmp_path) as server:
        async with opened(server.url) as store:
            warm_up = await Family(store).start()
            await warm_up.rotate(warm_up.first_token)  # connects, loads the script once
            family = await Family(store).start()
            ready, seen = threading.Event(), []
            watcher = threading.Thread(target=watch_commands, args=(server.url, ready, seen))
            watcher.start()
            assert ready.wait(timeout=10)
            outcome, _, _ = await family.rotate(family.first_token)
            with redis.Redis.from_url(server.url) as marker:
                marker.echo(MARKER)
            watcher.join(timeout=10)
    assert outcome is RotationOutcome.ROTATED
    marker_port = seen[-1]["client_port"]
    # One command from the store, whatever connection it used (the marker client aside)...
    from_the_store = [
        command["command"].split()[0]
        for command in seen
        if command["client_type"] != "lua" and command["client_port"] != marker_port
    ]
    assert from_the_store == ["EVALSHA"]
    # ...and the work happened inside the script, on the server.
    inside = {command["command"].split()[0] for command in seen if command["client_type"] == "lua"}
    assert inside >= {"HMGET", "HSET", "PEXPIREAT"}


async def test_redis_keys_expire_with_the_live_token(redis_url: str) -> None:
    async with opened(redis_url) as store:
        family = await Family(store).start(idle=60)
        key = f"auth-refresh:family:{family.id}"
        with redis.Redis.from_url(redis_url) as client:
            first_ttl = client.pttl(key)
            await family.rotate(family.first_token, idle=120)
            rotated_ttl = client.pttl(key)
            subject_ttl = client.pttl(f"auth-refresh:sessions:{family.subject}")
    # The clock is the real one here: the key lives as long as the live token, no longer.
    assert 0 < first_ttl <= 60_000
    assert 60_000 < rotated_ttl <= 120_000
    # The subject's index outlives any family of it.
    assert LIFETIME * 1000 - 5_000 < subject_ttl <= LIFETIME * 1000


def test_a_redis_url_without_the_extra_installed_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.delitem(sys.modules, "auth_refresh.stores.redis", raising=False)
    with pytest.raises(ConfigurationError, match=r"auth-refresh\[redis\]"):
        open_store("redis://127.0.0.1:6379/0")


def test_a_fault_of_the_store_module_is_not_taken_for_a_missing_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The extra is installed; one of the library's own modules cannot be imported.
    monkeypatch.setitem(sys.modules, "auth_refresh.stores.redis_layout", None)
    monkeypatch.delitem(sys.modules, "auth_refresh.stores.redis", raising=False)
    with pytest.raises(ImportError, match="redis_layout"):
        open_store("redis://127.0.0.1:6379/0")


def test_a_malformed_redis_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="Redis URL"):
        open_store("redis://127.0.0.1:6379/0?socket_timeout=soon")


async def test_the_sqlite_file_is_in_wal_mode_and_forgets_families_past_the_lifetime(
    tmp_path: Path,
) -> None:
    path = tmp_path / "families.db"
    async with opened(f"sqlite:///{path}") as store:
        expired = await Family(store).start(idle=60)
        # Another user's login purges it once past the absolute lifetime (schema 6: by age).
        later = Family(store)
        later.now = expired.now + LIFETIME + 1
        await later.start()
        with sqlite3.connect(path) as reader:
            assert reader.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            families = reader.execute("SELECT family_id FROM auth_refresh_families").fetchall()
        reader.close()
    assert families == [(later.id,)]


async def test_a_relative_sqlite_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with opened("sqlite:///relative.db") as store:
        await Family(store).start()
    assert (tmp_path / "relative.db").is_file()


def test_the_redis_timeouts_default_to_half_a_second_and_the_url_overrides_them() -> None:
    default = open_store("redis://127.0.0.1:6379/0")
    given = open_store("redis://127.0.0.1:6379/0?socket_timeout=0.2&socket_connect_timeout=0.1")
    settings = [
        store.client.connection_pool.connection_kwargs  # type: ignore[attr-defined]
        for store in (default, given)
    ]
    assert (settings[0]["socket_timeout"], settings[0]["socket_connect_timeout"]) == (0.5, 0.5)
    assert (settings[1]["socket_timeout"], settings[1]["socket_connect_timeout"]) == (0.2, 0.1)


async def test_a_redis_that_lost_its_scripts_still_rotates(tmp_path: Path) -> None:
    with running_redis(tmp_path) as server:
        async with opened(server.url) as store:
            family = await Family(store).start()
            await family.rotate(family.first_token)  # the script is loaded
            with redis.Redis.from_url(server.url) as client:
                client.script_flush()
                outcome, _, _ = await family.rotate(family.first_token)
                # The step ran (a repeat within the grace window) and EVAL put the script back.
                assert outcome is RotationOutcome.GRACE
                assert client.script_exists(store._rotate.sha) == [True]  # type: ignore[attr-defined]


async def test_redis_steps_reuse_connections_and_replace_ones_the_server_closed(
    tmp_path: Path,
) -> None:
    with running_redis(tmp_path) as server:
        async with opened(server.url) as store:
            family = await Family(store).start()
            token = family.first_token
            with redis.Redis.from_url(server.url) as client:
                for _ in range(5):
                    outcome, _, successor = await family.rotate(token)
                    assert outcome is RotationOutcome.ROTATED
                    token = successor.token_id
                # Six sequential steps used one connection; the others are the store's for its
                # checks and clock readings, and this client's own.
                assert len(client.client_list()) == 3
                client.client_kill_filter(_type="normal", skipme=True)
                assert len(client.client_list()) == 1
            # As in a running application, the event loop gets to see the socket close.
            await asyncio.sleep(0.2)
            outcome, _, _ = await family.rotate(token)
    # The closed connection was noticed before the step and replaced, not answered with a 503.
    assert outcome is RotationOutcome.ROTATED


# The connections of a loop that ended without closing the store are closed by the garbage
# collector, which warns about each; collected here, within this test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_redis_store_serves_every_event_loop_it_is_used_from(redis_url: str) -> None:
    """A connection belongs to the loop that opened it: a store used from a second loop (a
    test client without a lifespan, ``asyncio.run`` twice) opens its own there."""
    store = open_store(redis_url)
    family = Family(store)
    asyncio.run(family.start())
    first_rotation = asyncio.run(family.rotate(family.first_token))
    assert first_rotation[0] is RotationOutcome.ROTATED
    second_rotation = asyncio.run(family.rotate(first_rotation[2].token_id))
    assert second_rotation[0] is RotationOutcome.ROTATED
    asyncio.run(store.close())
    del store, family
    gc.collect()


async def test_redis_steps_at_once_share_one_connection_and_get_their_own_answers(
    tmp_path: Path,
) -> None:
    with running_redis(tmp_path) as server:
        async with opened(server.url) as store:
            families = [Family(store) for _ in range(200)]  # a subject of its own each
            await asyncio.gather(*(family.start() for family in families))

            async def rotate(family: Family, token_id: str) -> Rotation:
                return await store.rotate(
                    family.id,
                    token_id,
                    successor(family.now),
                    now=family.now,
                    grace_seconds=GRACE,
                    absolute_lifetime=LIFETIME,
                )

            # All at once, live tokens and unknown families mixed: an answer handed to the
            # wrong step would show as a wrong outcome or another family's subject.
            rotations = await asyncio.gather(
                *(rotate(family, family.first_token) for family in families),
                *(rotate(Family(store), "no-such-token") for _ in range(200)),
            )
            with redis.Redis.from_url(server.url) as client:
                # The store's one step connection, its one for checks and clock readings, and
                # this client's own.
                assert len(client.client_list()) == 3
    assert [(rotation.outcome, rotation.subject) for rotation in rotations] == [
        *((RotationOutcome.ROTATED, family.subject) for family in families),
        *((RotationOutcome.UNKNOWN, None) for _ in range(200)),
    ]


async def test_a_redis_connection_that_timed_out_is_dropped_not_waited_on_again(
    tmp_path: Path,
) -> None:
    with running_redis(tmp_path) as server:
        async with opened(server.url) as store:
            family = await Family(store).start()  # the store's connection is open
            with redis.Redis(port=server.port) as client:
                opened_before = client.info("stats")["total_connections_received"]
            server.pause()
            try:
                with pytest.raises(StoreUnavailableError):
                    await family.rotate(family.first_token)  # the step's 1.5 s deadline
            finally:
                server.resume()
            # The late answer to the step that gave up is not waited for: a new connection.
            outcome, _, _ = await family.rotate(family.first_token)
            with redis.Redis(port=server.port) as client:
                stats = client.info("stats")
                connected = len(client.client_list())
    # Redis may have run the paused step once it woke up: the retry is then its repeat.
    assert outcome in {RotationOutcome.ROTATED, RotationOutcome.GRACE}
    # One for the counting client before, one for the store's new step connection.
    assert stats["total_connections_received"] == opened_before + 2
    # The store's new step connection, its one for checks and clock readings, the counting client.
    assert connected == 3


async def test_a_redis_connection_reset_by_the_network_is_replaced_before_the_next_step(
    tmp_path: Path,
) -> None:
    with running_redis(tmp_path) as server:
        # A load balancer in between, which drops an idle connection with a TCP reset.
        async with relay_to(server.port) as (port, accepted):
            async with opened(f"redis://127.0.0.1:{port}/0") as store:
                family = await Family(store).start()
                _, _, successor = await family.rotate(family.first_token)
                dropped = accepted[0]
                linger_off = struct.pack("ii", 1, 0)  # close with RST, not FIN
                dropped.get_extra_info("socket").setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, linger_off
                )
                dropped.transport.abort()
                await asyncio.sleep(0.2)  # the event loop gets to see the reset
                outcome, _, _ = await family.rotate(successor.token_id)
            connections = len(accepted)
    # Not a 503 for the step after the reset: it went over a new connection.
    assert outcome is RotationOutcome.ROTATED
    assert connections == 2


def test_a_rediss_url_names_the_redis_store_with_tls() -> None:
    store = open_store("rediss://127.0.0.1:6380/0")
    assert type(store).__name__ == "RedisRefreshTokenStore"
    pool = store.client.connection_pool  # type: ignore[attr-defined]
    assert pool.connection_class.__name__ == "SSLConnection"


async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Bytes from ``source`` to ``sink`` until either side ends: half a relay."""
    with suppress(OSError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    sink.close()


@asynccontextmanager
async def relay_to(
    port: int, context: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[int, list[asyncio.StreamWriter]]]:
    """A TCP relay on a free loopback port to ``port`` (TLS towards its clients with
    ``context``): its port, and the client connections it accepted."""
    accepted: list[asyncio.StreamWriter] = []
    handlers: set[asyncio.Task[Any]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        accepted.append(writer)
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(pump(reader, upstream_writer), pump(upstream_reader, writer))

    relay = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield relay.sockets[0].getsockname()[1], accepted
    finally:
        relay.close()
        for writer in accepted:
            writer.close()
        # Every relayed connection ends within this test, before its event loop does.
        if handlers:
            await asyncio.wait(handlers, timeout=5)
        await relay.wait_closed()


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certificate_file, key_file = directory / "redis.crt", directory / "redis.key"
    certificate_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certificate_file, key_file


async def test_a_rediss_store_rotates_over_tls(tmp_path: Path) -> None:
    # This redis-server has no TLS: a TLS terminator in front of it, as in many deployments.
    certificate, key = self_signed_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)
    with running_redis(tmp_path) as server:
        url = "rediss://127.0.0.1:{}/3?ssl_ca_certs=" + str(certificate)
        async with (
            relay_to(server.port, context) as (port, _),
            opened(url.format(port)) as store,
        ):
            family = await Family(store).start()
            outcome, _, successor = await family.rotate(family.first_token)
            assert outcome is RotationOutcome.ROTATED
            assert (await family.rotate(successor.token_id))[0] is RotationOutcome.ROTATED
            assert (await family.rotate(family.first_token))[0] is RotationOutcome.REUSED
        with redis.Redis(port=server.port, db=3) as client:
            # The steps went through the terminator to the URL's database.
            assert client.exists(f"auth-refresh:family:{family.id}")
