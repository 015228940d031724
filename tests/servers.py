"""Real servers for the tests: uvicorn in a subprocess on a free loopback port."""

from __future__ import annotations

import os
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
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
