"""Login memory has a bound: at most ``AUTH_LOCAL_MAX_CONCURRENT_HASHES`` argon2 hashes run at
once; a login over the cap waits a short, bounded time, then gets a 503 with ``Retry-After``."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import argon2
import httpx
import pytest
from fastapi import FastAPI

from auth_refresh import (
    AuthenticationModule,
    AuthLocalBusyError,
    AuthLocalModule,
    ConfigurationError,
    PasswordStorageService,
)
from auth_refresh.companions.passwords import HashingLimit, default_hash_concurrency
from conftest import InMemoryUsers, serve
from servers import running_server

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
# pwdlib's argon2 hasher uses argon2-cffi's defaults (RFC 9106's low-memory profile).
ARGON2_MEMORY = argon2.PasswordHasher().memory_cost * 1024
BAD_LOGINS = [
    {"username": "user@example.com", "password": "wrong-password"},
    {"username": "nobody@example.com", "password": "any-password"},
]


class GatedPasswordStorage(PasswordStorageService):
    """The real storage, whose verifications wait until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.started = threading.Semaphore(0)
        self.verifications = 0

    def verify(self, password: str, password_hash: str | None) -> bool:
        self.verifications += 1
        self.started.release()
        self.gate.wait(timeout=10)
        return super().verify(password, password_hash)


# Every login here comes from one client, often for one username: their shares (429s,
# tests/test_login_fairness.py) are out of the way of the process-wide cap these tests are about.
UNSHARED = {"max_logins_per_client": 100, "max_logins_per_username": 100}


def login_app(users: Any, storage: PasswordStorageService, **settings: Any) -> FastAPI:
    settings = {**UNSHARED, **settings}
    app = FastAPI()
    AuthLocalModule.for_root(
        user_lookup_service=users,
        issue_token_service=AuthenticationModule.for_root().issue_token_service,
        password_storage_service=storage,
        settings=settings,
    ).attach(app)
    return app


async def test_a_login_over_the_cap_waits_then_gets_a_503_with_retry_after(
    users: InMemoryUsers,
) -> None:
    storage = GatedPasswordStorage()
    app = login_app(users, storage, max_concurrent_hashes=1, hash_wait_seconds=0.2)
    async with serve(app) as client:
        first = asyncio.ensure_future(client.post("/auth/login", json=BAD_LOGINS[0]))
        await asyncio.to_thread(storage.started.acquire, timeout=10)
        refused = await client.post("/auth/login", json=BAD_LOGINS[1])
        storage.gate.set()
        answered = await first
        after = await client.post("/auth/login", json=BAD_LOGINS[1])
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["cache-control"] == "no-store"
    assert refused.json()["errorCode"] == "AUTH_LOCAL_BUSY_ERROR"
    assert set(refused.json()) == {"statusCode", "errorCode", "message", "timestamp"}
    assert "eyJ" not in refused.text
    # The refused login cost no hash; the others were answered as usual.
    assert storage.verifications == 2
    assert answered.status_code == after.status_code == 401


async def test_a_login_that_waited_its_turn_is_answered(users: InMemoryUsers) -> None:
    storage = GatedPasswordStorage()
    app = login_app(users, storage, max_concurrent_hashes=1, hash_wait_seconds=10)
    async with serve(app) as client:
        first = asyncio.ensure_future(client.post("/auth/login", json=BAD_LOGINS[0]))
        await asyncio.to_thread(storage.started.acquire, timeout=10)
        second = asyncio.ensure_future(
            client.post(
                "/auth/login", json={"username": "user@example.com", "password": "password"}
            )
        )
        await asyncio.sleep(0.1)
        assert storage.verifications == 1  # the second waits for the first's turn
        storage.gate.set()
        answers = await asyncio.gather(first, second)
    assert [answer.status_code for answer in answers] == [401, 200]


async def test_turns_pass_on_in_order_and_a_caller_that_gave_up_passes_its_turn() -> None:
    limit = HashingLimit(1, wait_seconds=5)
    release = threading.Event()
    order: list[str] = []

    def hash_(name: str) -> str:
        if name == "first":
            release.wait(timeout=10)
        order.append(name)
        return name

    first = asyncio.ensure_future(limit.run(hash_, "first"))
    await asyncio.sleep(0.05)
    cancelled = asyncio.ensure_future(limit.run(hash_, "cancelled"))
    second = asyncio.ensure_future(limit.run(hash_, "second"))
    third = asyncio.ensure_future(limit.run(hash_, "third"))
    await asyncio.sleep(0.05)
    cancelled.cancel()
    release.set()
    assert await asyncio.gather(first, second, third) == ["first", "second", "third"]
    assert order == ["first", "second", "third"]
    assert limit.running == 0


async def test_a_caller_that_times_out_as_its_turn_comes_passes_it_on() -> None:
    limit = HashingLimit(1, wait_seconds=0.05)
    release = threading.Event()
    blocker = asyncio.ensure_future(limit.run(release.wait, 10))
    await asyncio.sleep(0.02)
    with pytest.raises(AuthLocalBusyError):
        await limit.run(lambda: None)
    release.set()
    await blocker
    assert limit.running == 0
    assert await limit.run(lambda: "free") == "free"


def test_the_cap_defaults_to_the_cpus_and_is_a_setting(
    users: InMemoryUsers, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = PasswordStorageService()
    module = AuthLocalModule.for_root(user_lookup_service=users, password_storage_service=storage)
    assert module.hashing.limit == default_hash_concurrency() >= 1
    monkeypatch.setenv("AUTH_LOCAL_MAX_CONCURRENT_HASHES", "3")
    module = AuthLocalModule.for_root(user_lookup_service=users, password_storage_service=storage)
    assert module.hashing.limit == 3
    monkeypatch.setenv("AUTH_LOCAL_MAX_CONCURRENT_HASHES", "0")
    with pytest.raises(ConfigurationError, match="AUTH_LOCAL_MAX_CONCURRENT_HASHES"):
        AuthLocalModule.for_root(user_lookup_service=users, password_storage_service=storage)


def memory(pid: int, field: str) -> int:
    """A memory figure of a process from /proc, in bytes (VmRSS: now, VmHWM: its peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return int(value.split()[0]) * 1024
    raise LookupError(field)


@pytest.mark.processes
async def test_40_concurrent_bad_logins_keep_a_worker_under_the_documented_bound(
    tmp_path: Path,
) -> None:
    """Issue 11's attack at a real uvicorn worker: 40 bad logins at once (unknown users hash
    too). Unbounded, the worker went from 68 MiB to 1.65 GiB."""
    cap = 2
    env = {
        "AUTH_LOCAL_MAX_CONCURRENT_HASHES": str(cap),
        "AUTH_LOCAL_MAX_LOGINS_PER_CLIENT": "40",
        "AUTH_LOCAL_MAX_LOGINS_PER_USERNAME": "40",
        "AUTH_REFRESH_STORE_URL": "memory://",
    }
    command = ["-m", "examples.sync_registration"]
    with running_server(command, workdir=tmp_path, env=env) as server:
        url = server.base_url + "/auth/login"
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=40)) as client:
            # Once, so imports, the unknown-user hash and the pool's first threads exist.
            assert (await client.post(url, json=BAD_LOGINS[1])).status_code == 401
            baseline = memory(server.process.pid, "VmRSS")
            answers = await asyncio.gather(
                *(client.post(url, json=BAD_LOGINS[i % 2]) for i in range(40))
            )
        peak = memory(server.process.pid, "VmHWM")
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {401, 503}, statuses
    assert 401 in statuses
    for answer in answers:
        if answer.status_code == 503:
            assert answer.headers["retry-after"] == "1"
            assert answer.json()["errorCode"] == "AUTH_LOCAL_BUSY_ERROR"
    # The documented bound: the cap times the hasher's memory cost, over what the worker held
    # before, with room for 40 requests' objects and thread stacks (far below one more hash).
    bound = baseline + cap * ARGON2_MEMORY + 48 * MiB
    assert peak <= bound, f"peak {peak / MiB:.0f} MiB over the bound {bound / MiB:.0f} MiB"
