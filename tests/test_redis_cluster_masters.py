"""The Redis Cluster store sends a refresh's script through a plain client of the family's
master (with the cluster client's credentials and TLS, no read timeout), against real clusters:
a master slower than the cluster client's socket timeout still answers within the step's
deadline; a family whose slot moved (CLUSTER SETSLOT, MIGRATE) is rotated on its new master, and
the next rotation goes there directly; once a replica took over a stopped master's slots the
store finds it on its own; closing the store while batches are under way leaves no connection
open on any master."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import redis
from redis.asyncio import cluster as asyncio_cluster
from redis.asyncio.connection import SSLConnection
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from auth_refresh import RefreshTokenStore, RotationOutcome, StoreUnavailableError, open_store
from auth_refresh.stores.redis_cluster import RedisClusterRefreshTokenStore
from auth_refresh.stores.redis_cluster_masters import master_client
from auth_refresh.stores.redis_cluster_url import cluster_client
from redis_cluster import (
    ClusterNodeServer,
    cluster_url,
    family_key,
    free_cluster_port,
    known_ports,
    running_cluster,
)
from store_fixtures import STARTUP_SECONDS, Family, new_id, opened

pytestmark = [pytest.mark.anyio, pytest.mark.servers]

# Longer than the cluster client's socket timeout (1 s), shorter than the cluster's node
# timeout (2 s, after which the other masters would start a failover).
SLOW_SECONDS = 1.4


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ClusterNodeServer]]:
    """A cluster of this module's own: its tests pause masters, move a slot, count clients."""
    with running_cluster(tmp_path_factory.mktemp("masters-cluster")) as nodes:
        yield nodes


def cluster_store(store: RefreshTokenStore) -> RedisClusterRefreshTokenStore:
    assert isinstance(store, RedisClusterRefreshTokenStore)
    return store


def master_of(nodes: list[ClusterNodeServer], family_id: str) -> ClusterNodeServer:
    """The master serving the family's slot now, as a new cluster client finds it."""
    seeds = [ClusterNode("127.0.0.1", node.port) for node in nodes if node.process is not None]
    with RedisCluster(startup_nodes=seeds) as client:
        port = client.get_node_from_key(family_key(family_id)).port
    return next(node for node in nodes if node.port == port)


def node_id(node: ClusterNodeServer) -> str:
    with redis.Redis(port=node.port, decode_responses=True) as client:
        return cast(str, client.execute_command("CLUSTER", "MYID"))


def scripts_sent(node: ClusterNodeServer) -> int:
    """The scripts the node was sent: run, failed, or refused with a redirect."""
    with redis.Redis(port=node.port, decode_responses=True) as client:
        stats = client.info("commandstats")
    return sum(
        stats.get(f"cmdstat_{command}", {}).get(count, 0)
        for command in ("evalsha", "eval")
        for count in ("calls", "failed_calls", "rejected_calls")
    )


async def test_a_masters_client_has_the_cluster_clients_settings_but_no_read_timeout() -> None:
    url = "rediss-cluster://user:secret@127.0.0.1:7000?ssl_ca_certs=/ca.pem&socket_connect_timeout=0.3"
    cluster = cluster_client(url)
    client = master_client(cluster, asyncio_cluster.ClusterNode("127.0.0.1", 7001))
    try:
        assert client.connection_pool.connection_class is SSLConnection
        settings = client.connection_pool.connection_kwargs
        assert (settings["host"], settings["port"]) == ("127.0.0.1", 7001)
        assert (settings["username"], settings["password"]) == ("user", "secret")
        assert (settings["ssl_ca_certs"], settings["socket_connect_timeout"]) == ("/ca.pem", 0.3)
        assert settings["decode_responses"] is True
        assert settings["socket_timeout"] is None
        assert settings["retry"].get_retries() == 0
    finally:
        await client.aclose()
        await cluster.aclose()


async def test_a_master_slower_than_the_socket_timeout_answers_within_the_deadline(
    cluster: list[ClusterNodeServer],
) -> None:
    # The cluster client reads with a 1 s socket timeout; a refresh's script goes through a
    # plain client of its master, which waits for as long as the step's deadline.
    async with opened(cluster_url(cluster)) as store:
        cluster_store(store).step_deadline = 3.0
        family = await Family(store).start()
        _, _, live = await family.rotate(family.first_token)  # connected, script cached
        master = master_of(cluster, family.id)
        master.pause()
        resuming = threading.Timer(SLOW_SECONDS, master.resume)
        resuming.start()
        try:
            started = time.monotonic()
            outcome, _, _ = await family.rotate(live.token_id)
            took = time.monotonic() - started
        finally:
            resuming.join()
    assert outcome is RotationOutcome.ROTATED
    assert took >= SLOW_SECONDS - 0.1  # it did wait for the master


def move_slot(
    slot: int,
    source: ClusterNodeServer,
    target: ClusterNodeServer,
    nodes: list[ClusterNodeServer],
) -> None:
    """The slot and its keys from ``source`` to ``target``, as a resharding moves them."""
    source_id, target_id = node_id(source), node_id(target)
    with (
        redis.Redis(port=source.port, decode_responses=True) as from_source,
        redis.Redis(port=target.port, decode_responses=True) as to_target,
    ):
        to_target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        from_source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        keys = from_source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
        assert keys
        from_source.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
    # The target first, as redis-cli's resharding does.
    for node in sorted(nodes, key=lambda node: node is not target):
        with redis.Redis(port=node.port, decode_responses=True) as client:
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)


async def test_a_family_whose_slot_moved_is_rotated_on_its_new_master_then_sent_there(
    cluster: list[ClusterNodeServer],
) -> None:
    async with opened(cluster_url(cluster)) as store:
        family = await Family(store).start()
        _, _, live = await family.rotate(family.first_token)  # its master's client is open
        source = master_of(cluster, family.id)
        target = next(node for node in cluster if node is not source)
        move_slot(key_slot(family_key(family.id).encode()), source, target, cluster)
        assert master_of(cluster, family.id) is target
        # The store still has the old master: it answers MOVED, and the call goes again
        # through the cluster client, which follows it and learns the slot's new master.
        outcome, _, live = await family.rotate(live.token_id)
        assert outcome is RotationOutcome.ROTATED
        before = scripts_sent(source), scripts_sent(target)
        outcome, _, _ = await family.rotate(live.token_id)
        after = scripts_sent(source), scripts_sent(target)
    assert outcome is RotationOutcome.ROTATED
    assert (after[0] - before[0], after[1] - before[1]) == (0, 1)


def add_replica(workdir: Path, nodes: list[ClusterNodeServer]) -> ClusterNodeServer:
    """A new node that joins the cluster as the first node's replica, in sync with it and known
    to every node."""
    master = nodes[0]
    directory = workdir / "replica"
    directory.mkdir()
    replica = ClusterNodeServer(directory, port=free_cluster_port())
    replica.start()
    master_id = node_id(master)
    deadline = time.monotonic() + STARTUP_SECONDS
    with redis.Redis(port=replica.port, decode_responses=True, socket_timeout=1.0) as client:
        while True:
            try:
                client.execute_command("CLUSTER", "REPLICATE", master_id)
                break
            except redis.ResponseError:  # an unknown node until the handshake is done
                assert time.monotonic() < deadline, "the replica did not meet its master"
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", master.port)
                time.sleep(0.2)
        while client.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not sync"
            time.sleep(0.1)
    for node in nodes:
        with redis.Redis(port=node.port, decode_responses=True) as client:
            while replica.port not in known_ports(client):
                assert time.monotonic() < deadline, f"{node.port} did not learn of the replica"
                time.sleep(0.1)
    return replica


def take_over(replica: ClusterNodeServer, others: list[ClusterNodeServer]) -> None:
    """The replica takes its stopped master's slots; until the other masters know."""
    replica_id = node_id(replica)
    with redis.Redis(port=replica.port, decode_responses=True) as client:
        client.execute_command("CLUSTER", "FAILOVER", "TAKEOVER")
    deadline = time.monotonic() + STARTUP_SECONDS
    for node in others:
        with redis.Redis(port=node.port, decode_responses=True) as client:
            while True:
                lines = str(client.execute_command("CLUSTER", "NODES")).splitlines()
                # <id> <address> <flags> <master> <ping> <pong> <epoch> <link> <slot>...
                seen = [line.split() for line in lines if line.startswith(replica_id)]
                if seen and "master" in seen[0][2] and len(seen[0]) > 8:
                    break
                assert time.monotonic() < deadline, f"{node.port} did not see the takeover"
                time.sleep(0.1)


async def test_once_a_replica_took_over_a_stopped_masters_slots_the_store_finds_it(
    tmp_path: Path,
) -> None:
    # The store's plain client of the stopped master cannot know that its slots moved; the
    # cluster client reads the layout again only after an error of its own.
    with running_cluster(tmp_path) as nodes:
        master = nodes[0]
        replica = add_replica(tmp_path, nodes)
        try:
            async with opened(cluster_url(nodes)) as store:
                family = Family(store)
                while master_of(nodes, (await family.start()).id) is not master:
                    family = Family(store)
                _, _, live = await family.rotate(family.first_token)
                with redis.Redis(port=master.port) as client:
                    assert client.execute_command("WAIT", 1, 5000) == 1  # the replica has it
                master.stop()
                take_over(replica, nodes[1:])
                failed = 0
                deadline = time.monotonic() + 10
                while True:
                    try:
                        outcome, _, _ = await family.rotate(live.token_id)
                        break
                    except StoreUnavailableError:
                        failed += 1
                        assert time.monotonic() < deadline, f"not found after {failed} steps"
                        await asyncio.sleep(0.2)
        finally:
            replica.stop()
    assert outcome is RotationOutcome.ROTATED


def clients_of(node: ClusterNodeServer) -> int:
    """The node's client connections, the one asking left out, and a node's MIGRATE connection
    (a resharding's, kept for 10 s) too."""
    with redis.Redis(port=node.port, decode_responses=True) as client:
        asking = str(client.client_id())
        listed = client.client_list()
    return sum(entry["id"] != asking and entry["cmd"] != "restore-asking" for entry in listed)


async def test_closing_while_a_batch_hangs_leaves_no_connection_open(
    cluster: list[ClusterNodeServer],
) -> None:
    store = cluster_store(open_store(cluster_url(cluster)))
    families: dict[int, Family] = {}  # one on each master, by port
    while len(families) < len(cluster):
        family = await Family(store).start()
        families.setdefault(master_of(cluster, family.id).port, family)
    for family in families.values():  # a plain client of every master, connected
        await family.rotate(family.first_token)
    hanging = families[cluster[0].port]
    cluster[0].pause()
    # Back while the store closes: the batches under way get their answers then.
    resuming = threading.Timer(0.3, cluster[0].resume)
    try:
        steps = [asyncio.ensure_future(hanging.rotate(new_id()))]
        await asyncio.sleep(0.1)  # its batch is written and waits for the reply
        steps.append(asyncio.ensure_future(hanging.rotate(new_id())))  # the next batch's
        await asyncio.sleep(0.1)
        resuming.start()
        await store.close()
    finally:
        resuming.join()
        cluster[0].resume()
    await asyncio.gather(*steps, return_exceptions=True)
    deadline = time.monotonic() + 3
    while left := {node.port: clients_of(node) for node in cluster if clients_of(node)}:
        assert time.monotonic() < deadline, f"connections left open: {left}"
        await asyncio.sleep(0.1)
