"""Over HTTP: uvicorn serving one configuration, load from wrk (or a small Python loop).

The server runs one worker pinned to one core with ``taskset``; wrk runs pinned to the other
core, so the two never compete for a CPU (when the machine has two or more).

Each request presents a refresh token never presented before; for a configuration with DPoP,
beside it a proof never sent before (header ``DPoP``), both made before the run.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.common import LIBRARY_ENVIRONMENT_PREFIXES
from bench.configurations import Configuration
from bench.dpop_proofs import ProofMaker

ROOT = Path(__file__).resolve().parent.parent
LUA_SCRIPT = Path(__file__).resolve().parent / "refresh.lua"
STARTUP_SECONDS = 60.0
MINT_BATCH = 5000
MINT_RETRIES = 3
WRK_MISSING = (
    "wrk is not installed: the HTTP benchmark needs it (Debian/Ubuntu: apt-get install wrk)"
)


class HarnessError(RuntimeError):
    """The harness itself failed: a server did not start, a tool gave no result."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def cpu_plan() -> tuple[int | None, int | None, str]:
    """The core for the server, the core for the load generator, and how that was decided."""
    cpus = sorted(os.sched_getaffinity(0))
    if shutil.which("taskset") is None:
        return None, None, "not pinned: taskset is not installed"
    if len(cpus) < 2:
        return None, None, f"not pinned: only {len(cpus)} CPU available"
    return cpus[0], cpus[1], f"server on CPU {cpus[0]}, load generator on CPU {cpus[1]}"


def pinned(command: list[str], cpu: int | None) -> list[str]:
    return command if cpu is None else ["taskset", "-c", str(cpu), *command]


@dataclass
class Server:
    configuration: Configuration
    base_url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise HarnessError(
                    f"{self.configuration.name}: the server exited during startup:\n"
                    + self.output()
                )
            try:
                if httpx.get(self.base_url + "/bench/ready", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise HarnessError(
            f"{self.configuration.name}: the server did not start in {STARTUP_SECONDS} s:\n"
            + self.output()
        )

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        self.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def launch(
    configuration: Configuration,
    environment: Mapping[str, str],
    *,
    workdir: Path,
    cpu: int | None,
    loop: str,
    http: str,
) -> Server:
    """Start uvicorn for ``configuration`` on a free loopback port (not yet ready)."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.apps:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        loop,
        "--http",
        http,
        "--no-access-log",
        "--log-level",
        "warning",
        "--backlog",
        "2048",
    ]
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(LIBRARY_ENVIRONMENT_PREFIXES)
    }
    env.update(environment)
    env["BENCH_CONFIGURATION"] = configuration.name
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    log = workdir / f"server-{configuration.name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            pinned(command, cpu), cwd=workdir, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    return Server(configuration, f"http://127.0.0.1:{port}", process, log)


@contextmanager
def running(
    launches: Sequence[tuple[Configuration, Mapping[str, str]]],
    *,
    workdir: Path,
    cpu: int | None,
    loop: str = "auto",
    http: str = "auto",
) -> Iterator[list[Server]]:
    """Servers for every configuration, started together, all stopped on the way out."""
    servers: list[Server] = []
    try:
        for configuration, environment in launches:
            servers.append(
                launch(configuration, environment, workdir=workdir, cpu=cpu, loop=loop, http=http)
            )
        for server in servers:
            server.wait_until_ready()
        yield servers
    finally:
        # All at once: each takes a moment to shut down.
        for server in servers:
            server.terminate()
        for server in servers:
            server.stop()


def mint(base_url: str, count: int, jkt: str | None = None) -> list[str]:
    """``count`` fresh refresh tokens from the server's ``/bench/mint``; bound to the DPoP key
    whose thumbprint is ``jkt``, when given."""
    tokens: list[str] = []
    asked: dict[str, object] = {} if jkt is None else {"jkt": jkt}
    with httpx.Client(base_url=base_url, timeout=120.0) as client:
        while len(tokens) < count:
            batch = min(MINT_BATCH, count - len(tokens))
            for retry in range(MINT_RETRIES + 1):
                if retry:
                    time.sleep(1.0)
                response = client.post("/bench/mint", json={"count": batch, **asked})
                # A store step that missed its deadline (the shared host stalled) answers 503:
                # the batch is asked for again, as a client would.
                if response.status_code != 503:
                    break
            if response.status_code != 200:
                raise HarnessError(f"/bench/mint answered {response.status_code}")
            tokens.extend(response.json()["tokens"])
    return tokens


@dataclass(frozen=True)
class Refreshes:
    """What a run presents, one request each: refresh tokens and, for a configuration with
    DPoP, a proof beside each."""

    tokens: list[str]
    proofs: list[str] | None = None


def refreshes(server: Server, count: int) -> Refreshes:
    """``count`` fresh refresh tokens from ``server``. With DPoP, bound to a new client key,
    each with a proof of it for ``POST /auth/refresh`` made now: its ``htu`` is the URL the
    server sees, and its ``iat`` within the registration's window for the run that follows."""
    if not server.configuration.dpop:
        return Refreshes(mint(server.base_url, count))
    client = ProofMaker()
    tokens = mint(server.base_url, count, client.thumbprint)
    url = server.base_url + "/auth/refresh"
    return Refreshes(tokens, [client.proof("POST", url).decode() for _ in tokens])


def start_lag(base_url: str) -> None:
    """Start measuring the server's event-loop lag."""
    response = httpx.post(base_url + "/bench/lag", timeout=10.0)
    if response.status_code != 200:
        raise HarnessError(f"POST /bench/lag answered {response.status_code}")


def lag(base_url: str) -> float:
    """The server's event-loop lag p99 (ms) since ``start_lag``; its measuring stops."""
    response = httpx.get(base_url + "/bench/lag", timeout=10.0)
    if response.status_code != 200:
        raise HarnessError(f"/bench/lag answered {response.status_code}")
    p99: float = response.json()["p99_ms"]
    return p99


@dataclass
class LoadResult:
    loader: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: int
    wraps: int
    # The server's event-loop lag during the run (GET /bench/lag).
    lag_p99_ms: float = 0.0

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def valid(self) -> bool:
        return self.requests > 0 and self.non_2xx == 0 and self.errors == 0 and self.wraps == 0

    def problems(self) -> str:
        return (
            f"{self.requests} requests, {self.non_2xx} non-2xx, {self.errors} socket errors, "
            f"{self.wraps} token wrap-arounds"
        )


def wrk_version() -> str | None:
    if shutil.which("wrk") is None:
        return None
    completed = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return (completed.stdout or completed.stderr).splitlines()[0].strip()


def run_wrk(
    url: str,
    tokens: list[str],
    *,
    seconds: int,
    connections: int,
    threads: int,
    cpu: int | None,
    workdir: Path,
    script: Path = LUA_SCRIPT,
    proofs: list[str] | None = None,
) -> LoadResult:
    """wrk on ``url``; ``script`` reads the tokens file, a line per request: the token, and
    with ``proofs`` a tab and the request's DPoP proof."""
    lines = tokens if proofs is None else [f"{t}\t{p}" for t, p in zip(tokens, proofs, strict=True)]
    tokens_file = workdir / "tokens.txt"
    tokens_file.write_text("\n".join(lines) + "\n")
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
        "--",
        str(tokens_file),
        str(threads),
    ]
    completed = subprocess.run(
        pinned(command, cpu), capture_output=True, text=True, check=False, timeout=seconds + 120
    )
    tokens_file.unlink()
    for line in completed.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            data = json.loads(line.removeprefix("BENCH_RESULT "))
            return LoadResult(
                loader="wrk",
                requests=data["requests"],
                seconds=data["duration_us"] / 1e6,
                p50_ms=data["p50_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
                non_2xx=data["non_2xx"],
                errors=data["errors_connect"]
                + data["errors_read"]
                + data["errors_write"]
                + data["errors_timeout"],
                wraps=data["wraps"],
            )
    raise HarnessError(
        f"wrk gave no result (exit {completed.returncode}):\n{completed.stdout}\n{completed.stderr}"
    )


def run_python_load(
    url: str,
    tokens: list[str],
    *,
    seconds: float,
    connections: int,
    proofs: list[str] | None = None,
) -> LoadResult:
    """A small closed-loop load: ``connections`` keep-alive clients for ``seconds`` or until
    every token was presented once, whichever comes first; with ``proofs``, each token's in
    its request's ``DPoP`` header.

    Far slower than wrk (the client is Python too): for the smoke run only.
    """
    return asyncio.run(_python_load(url, tokens, proofs, seconds=seconds, connections=connections))


async def _python_load(
    url: str, tokens: list[str], proofs: list[str] | None, *, seconds: float, connections: int
) -> LoadResult:
    latencies: list[float] = []
    counters = {"next": 0, "non_2xx": 0, "errors": 0, "wraps": 0}
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=10.0) as client:
        deadline = time.perf_counter() + seconds
        began = time.perf_counter()

        async def worker() -> None:
            while time.perf_counter() < deadline:
                index = counters["next"]
                counters["next"] += 1
                if index >= len(tokens):
                    return  # every token presented once: done early
                headers = None if proofs is None else {"DPoP": proofs[index]}
                start = time.perf_counter()
                try:
                    response = await client.post(
                        url, json={"refreshToken": tokens[index]}, headers=headers
                    )
                except httpx.HTTPError:
                    counters["errors"] += 1
                    continue
                latencies.append(time.perf_counter() - start)
                if not 200 <= response.status_code < 300:
                    counters["non_2xx"] += 1

        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - began
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [0.0] * 99
    return LoadResult(
        loader="python",
        requests=len(latencies),
        seconds=elapsed,
        p50_ms=quantiles[49] * 1000,
        p99_ms=quantiles[98] * 1000,
        non_2xx=counters["non_2xx"],
        errors=counters["errors"],
        wraps=counters["wraps"],
    )
