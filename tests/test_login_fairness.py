"""Fair logins (issue 22): a login over its client address's (or its username's) share of
logins in progress waits for a place, then gets a 429 with ``Retry-After``, without a hash, so
one client's flood leaves the hashing to the others; ``X-Forwarded-For`` names the client only
from a trusted proxy."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request

from auth_refresh import (
    AuthenticationModule,
    AuthLocalBusyError,
    AuthLocalModule,
    AuthLocalSettings,
    AuthLocalTooManyLoginsError,
    ConfigurationError,
    PasswordStorageService,
)
from auth_refresh._utils import client_address
from auth_refresh.companions.auth_local import SharedLimit
from conftest import InMemoryUsers
from servers import running_server

pytestmark = pytest.mark.anyio

WRONG = {"username": "user@example.com", "password": "wrong-password"}
RIGHT = {"username": "user@example.com", "password": "password"}


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


Clients = Callable[[str], httpx.AsyncClient]


@asynccontextmanager
async def serving(
    users: Any, storage: PasswordStorageService, **settings: Any
) -> AsyncIterator[tuple[AuthLocalModule, Clients]]:
    """The login route with its lifespan running, and clients that connect from an address."""
    app = FastAPI()
    module = AuthLocalModule.for_root(
        user_lookup_service=users,
        issue_token_service=AuthenticationModule.for_root().issue_token_service,
        password_storage_service=storage,
        settings={"max_concurrent_hashes": 8, "hash_wait_seconds": 0.2, **settings},
    )
    module.attach(app)
    opened: list[httpx.AsyncClient] = []

    def client_from(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(address, 40000))
        opened.append(httpx.AsyncClient(transport=transport, base_url="http://testserver"))
        return opened[-1]

    async with app.router.lifespan_context(app):
        try:
            yield module, client_from
        finally:
            for client in opened:
                await client.aclose()


async def hashing(storage: GatedPasswordStorage, client: httpx.AsyncClient, body: Any) -> Any:
    """A login sent, once its password is being checked (held at the gate)."""
    answer = asyncio.ensure_future(client.post("/auth/login", json=body))
    await asyncio.to_thread(storage.started.acquire, timeout=10)
    return answer


def assert_too_many_logins(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == "1"
    assert response.headers["cache-control"] == "no-store"
    assert response.json()["errorCode"] == "AUTH_LOCAL_TOO_MANY_LOGINS_ERROR"
    assert set(response.json()) == {"statusCode", "errorCode", "message", "timestamp"}
    assert "WWW-Authenticate" not in response.headers


async def test_a_client_over_its_share_gets_a_429_and_the_others_are_checked(
    users: InMemoryUsers,
) -> None:
    storage = GatedPasswordStorage()
    async with serving(users, storage, max_logins_per_client=1) as (module, client_from):
        attacker, other = client_from("127.0.0.2"), client_from("127.0.0.3")
        first = await hashing(storage, attacker, WRONG)
        refused = await attacker.post("/auth/login", json={**WRONG, "username": "x@example.com"})
        second = await hashing(storage, other, {**WRONG, "username": "y@example.com"})
        assert storage.verifications == 2  # the refused login cost no hash
        storage.gate.set()
        answers = [await first, await second]
        again = await attacker.post("/auth/login", json=RIGHT)  # its share is free again
        assert len(module.limits.clients) == len(module.limits.usernames) == 0
    assert_too_many_logins(refused)
    assert [answer.status_code for answer in answers] == [401, 401]
    assert again.status_code == 200


async def test_a_username_over_its_share_gets_a_429_from_any_client(users: InMemoryUsers) -> None:
    storage = GatedPasswordStorage()
    async with serving(users, storage, max_logins_per_username=1) as (_, client_from):
        first = await hashing(storage, client_from("127.0.0.2"), WRONG)
        # Another client, the same username written in other letters.
        upper = {**RIGHT, "username": "USER@example.com"}
        refused = await client_from("127.0.0.3").post("/auth/login", json=upper)
        storage.gate.set()
        assert (await first).status_code == 401
        after = await client_from("127.0.0.3").post("/auth/login", json=RIGHT)
    assert_too_many_logins(refused)
    assert storage.verifications == 2
    assert after.status_code == 200


async def test_a_client_gets_half_the_hashing_and_never_a_usernames_whole_share(
    users: InMemoryUsers, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = PasswordStorageService()
    module = AuthLocalModule.for_root(
        user_lookup_service=users,
        password_storage_service=storage,
        settings={"max_concurrent_hashes": 6},
    )
    assert (module.limits.clients.limit, module.limits.usernames.limit) == (3, 4)
    one = AuthLocalModule.for_root(
        user_lookup_service=users,
        password_storage_service=storage,
        settings={"max_concurrent_hashes": 1},
    )
    assert (one.limits.clients.limit, one.limits.usernames.limit) == (1, 2)
    monkeypatch.setenv("AUTH_LOCAL_MAX_LOGINS_PER_CLIENT", "5")
    monkeypatch.setenv("AUTH_LOCAL_MAX_LOGINS_PER_USERNAME", "4")
    module = AuthLocalModule.for_root(user_lookup_service=users, password_storage_service=storage)
    assert (module.limits.clients.limit, module.limits.usernames.limit) == (5, 4)
    monkeypatch.setenv("AUTH_LOCAL_MAX_LOGINS_PER_CLIENT", "0")
    with pytest.raises(ConfigurationError, match="AUTH_LOCAL_MAX_LOGINS_PER_CLIENT"):
        AuthLocalModule.for_root(user_lookup_service=users, password_storage_service=storage)


async def test_a_login_over_its_share_waits_its_turn_in_order() -> None:
    limit = SharedLimit(1, wait_seconds=5)
    order: list[str] = []
    release = asyncio.Event()

    async def login(name: str) -> None:
        async with limit.hold("127.0.0.2"):
            if name == "first":
                await release.wait()
            order.append(name)

    first = asyncio.ensure_future(login("first"))
    await asyncio.sleep(0.01)
    cancelled = asyncio.ensure_future(login("cancelled"))
    second = asyncio.ensure_future(login("second"))
    other_client = limit.hold("127.0.0.3")
    await asyncio.wait_for(other_client.__aenter__(), 0.1)  # another client's place is free
    await asyncio.sleep(0.01)
    cancelled.cancel()
    release.set()
    await asyncio.gather(first, second)
    assert order == ["first", "second"]
    assert len(limit) == 1  # only the other client's login is still in progress
    await other_client.__aexit__(None, None, None)
    assert len(limit) == 0


async def test_the_tracked_clients_are_capped_and_leave_with_their_last_login() -> None:
    limit = SharedLimit(2, wait_seconds=0.05, max_keys=2)
    async with limit.hold("a"), limit.hold("a"), limit.hold("b"):
        with pytest.raises(AuthLocalTooManyLoginsError):  # after waiting in vain
            await limit.hold("a").__aenter__()
        # A third client while two are tracked: the process is overloaded, a 503.
        with pytest.raises(AuthLocalBusyError):
            await limit.hold("c").__aenter__()
        assert len(limit) == 2
    assert len(limit) == 0
    async with limit.hold("c"):
        assert len(limit) == 1


# --- The client's address, and trusted proxies ---


def request_from(peer: str | None, *forwarded_for: str) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded_for]
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/auth/login",
        "headers": headers,
        "client": (peer, 40000) if peer else None,
    }
    return Request(scope)


PROXIES = [ip_network("10.0.0.0/8"), ip_network("127.0.0.1")]


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "proxies", "client"),
    [
        # Without trusted proxies, the header is never read.
        ("127.0.0.1", ["198.51.100.1"], [], "127.0.0.1"),
        # From a peer that is not a trusted proxy, neither.
        ("192.0.2.9", ["198.51.100.1"], PROXIES, "192.0.2.9"),
        # From a trusted proxy: the address it appended.
        ("127.0.0.1", ["198.51.100.1"], PROXIES, "198.51.100.1"),
        # What the client wrote to the left of it does not count.
        ("127.0.0.1", ["203.0.113.7, 198.51.100.1"], PROXIES, "198.51.100.1"),
        # Through two trusted proxies, in one header or two.
        ("127.0.0.1", ["198.51.100.1, 10.1.2.3"], PROXIES, "198.51.100.1"),
        ("127.0.0.1", ["198.51.100.1", "10.1.2.3"], PROXIES, "198.51.100.1"),
        # A hop that is no address: the last trusted proxy is the client.
        ("127.0.0.1", ["unknown"], PROXIES, "127.0.0.1"),
        ("127.0.0.1", ["198.51.100.1, junk, 10.1.2.3"], PROXIES, "10.1.2.3"),
        # A dual-stack socket's IPv4 peer is that IPv4 address.
        ("::ffff:127.0.0.1", ["2001:db8::1"], PROXIES, "2001:db8::1"),
        # No peer (a Unix socket): no address, and no header read.
        (None, ["198.51.100.1"], PROXIES, None),
    ],
)
def test_the_client_address_trusts_x_forwarded_for_only_from_trusted_proxies(
    peer: str | None, forwarded_for: list[str], proxies: Any, client: str | None
) -> None:
    found = client_address(request_from(peer, *forwarded_for), proxies)
    assert found == (ip_address(client) if client else None)


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_share(
    users: InMemoryUsers,
) -> None:
    storage = GatedPasswordStorage()
    settings = {"max_logins_per_client": 1, "trusted_proxies": ["127.0.0.1"]}
    async with serving(users, storage, **settings) as (_, client_from):
        proxy, stranger = client_from("127.0.0.1"), client_from("127.0.0.2")

        def forwarded(address: str) -> dict[str, str]:
            return {"X-Forwarded-For": address}

        async def login(client: httpx.AsyncClient, address: str) -> httpx.Response:
            body = {**WRONG, "username": f"{address}@example.com"}
            return await client.post("/auth/login", json=body, headers=forwarded(address))

        first = await hashing(storage, proxy, {**WRONG, "username": "a@example.com"})
        # The proxy's own share is taken: a login it forwards for another client is checked...
        other = asyncio.ensure_future(login(proxy, "198.51.100.2"))
        await asyncio.to_thread(storage.started.acquire, timeout=10)
        # ...one for the client already at its share is refused...
        same_as_proxy = await login(proxy, "127.0.0.1")
        # ...and a peer that is no trusted proxy cannot pick a share by sending the header.
        stranger_first = asyncio.ensure_future(login(stranger, "198.51.100.3"))
        await asyncio.to_thread(storage.started.acquire, timeout=10)
        stranger_spoofing = await login(stranger, "198.51.100.4")
        storage.gate.set()
        answers = await asyncio.gather(first, other, stranger_first)
    assert [answer.status_code for answer in answers] == [401, 401, 401]
    assert_too_many_logins(same_as_proxy)
    assert_too_many_logins(stranger_spoofing)
    assert storage.verifications == 3


def test_trusted_proxies_come_from_the_shared_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert AuthLocalSettings().trusted_proxies == []
    monkeypatch.setenv("AUTH_REFRESH_TRUSTED_PROXIES", '["10.0.0.0/8", "192.0.2.1", "::1"]')
    assert [str(network) for network in AuthLocalSettings().trusted_proxies] == [
        "10.0.0.0/8",
        "192.0.2.1/32",
        "::1/128",
    ]
    monkeypatch.setenv("AUTH_REFRESH_TRUSTED_PROXIES", '["10.0.0.0/8", "proxy.internal"]')
    with pytest.raises(ConfigurationError, match=r"^AuthLocalSettings: AUTH_REFRESH_TRUSTED_PROX"):
        AuthLocalSettings()
    monkeypatch.delenv("AUTH_REFRESH_TRUSTED_PROXIES")
    with pytest.raises(ConfigurationError, match=r"trusted_proxies\.0: "):
        AuthLocalSettings(trusted_proxies=["proxy.internal"])


# --- The flood, at a real server ---

# The attacker, in a process of its own so that its requests do not slow the test's clock: 100
# bad logins at a time from 127.0.0.2, each sent again as soon as it is answered, until its
# standard input closes; then it prints each answer's status.
FLOOD = """
import asyncio, json, sys

async def main(host, port):
    body = b'{"username": "user@example.com", "password": "wrong"}'
    request = (
        b"POST /auth/login HTTP/1.1\\r\\nHost: %s:%s\\r\\nContent-Type: application/json\\r\\n"
        b"Content-Length: %d\\r\\n\\r\\n%s" % (host.encode(), port.encode(), len(body), body)
    )
    done = asyncio.Event()
    statuses = []

    async def flood():
        reader, writer = await asyncio.open_connection(host, int(port), local_addr=("127.0.0.2", 0))
        while not done.is_set():
            writer.write(request)
            head = await reader.readuntil(b"\\r\\n\\r\\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\\r\\n")[0])
            await reader.readexactly(length)
            statuses.append(int(head.split(b" ")[1]))
        writer.close()

    flooders = [asyncio.ensure_future(flood()) for _ in range(100)]
    print("flooding", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    done.set()
    await asyncio.gather(*flooders)
    print(json.dumps(statuses), flush=True)

asyncio.run(main(*sys.argv[1:]))
"""


async def timed_login(client: httpx.AsyncClient, url: str) -> tuple[int, float]:
    started = time.perf_counter()
    response = await client.post(url, json=RIGHT)
    return response.status_code, time.perf_counter() - started


@pytest.mark.processes
@pytest.mark.alone
async def test_a_flood_of_bad_logins_from_one_address_leaves_another_logging_in(
    tmp_path: Path,
) -> None:
    """Issue 22's attack at a real uvicorn worker with the default settings: 100 concurrent bad
    logins for a user from 127.0.0.2 while the user logs in from 127.0.0.3."""
    env = {"AUTH_REFRESH_STORE_URL": "memory://"}
    with running_server(["-m", "examples.sync_registration"], workdir=tmp_path, env=env) as server:
        url = server.base_url + "/auth/login"
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.3")
        async with httpx.AsyncClient(transport=transport, timeout=30) as user:
            await timed_login(user, url)  # warm: imports, the thread pool
            unloaded = [await timed_login(user, url) for _ in range(5)]
            flooder = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                FLOOD,
                *server.base_url.removeprefix("http://").split(":"),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            assert flooder.stdin is not None
            assert flooder.stdout is not None
            try:
                assert await flooder.stdout.readline() == b"flooding\n"
                await asyncio.sleep(0.5)  # the flood under way
                loaded = [await timed_login(user, url) for _ in range(5)]
            finally:
                flooder.stdin.close()
                output, _ = await flooder.communicate()
    flood_statuses = json.loads(output)
    assert [status for status, _ in unloaded] == [200] * 5
    baseline = statistics.median(seconds for _, seconds in unloaded)
    assert [status for status, _ in loaded] == [200] * 5
    slowest = max(seconds for _, seconds in loaded)
    assert slowest <= 2 * baseline, f"{slowest * 1000:.0f} ms against {baseline * 1000:.0f} ms"
    assert set(flood_statuses) <= {401, 429}, set(flood_statuses)
    assert flood_statuses.count(429) > flood_statuses.count(401) > 0
