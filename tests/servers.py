"""Real servers for the tests: uvicorn in a subprocess on a free loopback port."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
STARTUP_SECONDS = 30.0


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Servers listen below the kernel's range for outgoing connections: a port probed free there
# cannot be taken by one of the suite's many client sockets before the server binds it (a Redis
# Cluster node once failed to start so).
FIRST_PORT = 10000
EPHEMERAL_START = _ephemeral_start()


def free_port(below: int = EPHEMERAL_START) -> int:
    """A port free on 127.0.0.1, from ``FIRST_PORT`` up to ``below``."""
    while True:
        port = random.randrange(FIRST_PORT, below)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running_server(
    arguments: Sequence[str],
    *,
    workdir: Path,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
) -> Iterator[Server]:
    """``python <arguments>`` with PORT set, until it answers on 127.0.0.1; stopped after.

    ``arguments`` are e.g. ``["-m", "examples.sync_registration"]`` or
    ``["-m", "uvicorn", "module:app", "--port", "{port}"]`` (``{port}`` is filled in).
    """
    port = port or free_port()
    log = workdir / f"server-{port}.log"
    environment = {**os.environ, **(env or {}), "PORT": str(port)}
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), environment.get("PYTHONPATH")])
    )
    command = [sys.executable, *(part.format(port=port) for part in arguments)]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=workdir, env=environment, stdout=sink, stderr=sink)
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        _wait_until_listening(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_listening(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited during startup:\n{server.output()}")
        try:
            httpx.get(server.base_url + "/openapi.json", timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"the server did not start in {STARTUP_SECONDS} s:\n{server.output()}")
