"""Sessions users can see and end: access tokens name their session (``sid``) and die with it
(logout, reuse, revoke_subject, the session routes), in every store; the routes list and end
sessions of the caller only; the guard's per-process cache reads the store at most once per
session per interval."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from auth_refresh import (
    AuthJwtModule,
    AuthRefreshModule,
    MemoryRefreshTokenStore,
    PasswordStorageService,
    SessionNotFoundError,
    SessionStart,
    SqliteRefreshTokenStore,
)
from auth_refresh.stores.sealing import session_id_of
from auth_refresh.stores.session_cache import SessionCache
from conftest import InMemoryUsers, User, serve
from factories import login
from rotation_app import claims_of, refresh, rotating_app

pytestmark = pytest.mark.anyio

SESSIONS = "/auth/sessions"


def bearer(pair: dict[str, str]) -> dict[str, str]:
    return {"Authorization": "Bearer " + pair["accessToken"]}


async def me(client: httpx.AsyncClient, pair: dict[str, str]) -> int:
    return (await client.get("/me", headers=bearer(pair))).status_code


async def login_as(client: httpx.AsyncClient, username: str, agent: str) -> dict[str, str]:
    answer = await client.post(
        "/auth/login",
        json={"username": username, "password": "password"},
        headers={"User-Agent": agent},
    )
    assert answer.status_code == 200, answer.text
    pair: dict[str, str] = answer.json()
    return pair


@pytest.fixture
def two_users(users: InMemoryUsers) -> InMemoryUsers:
    (first,) = users.users.values()
    users.users["user-2"] = User("user-2", "other@example.com", first.password_hash)
    return users


async def test_the_access_token_names_its_session_and_dies_at_logout(
    users: InMemoryUsers, password_storage: PasswordStorageService, store_url: str
) -> None:
    app, _ = rotating_app(users, password_storage, settings={"store_url": store_url})
    async with serve(app) as client:
        pair = await login(client)
        sid = claims_of(pair["accessToken"])["sid"]
        assert sid == session_id_of(claims_of(pair["refreshToken"])["fam"])
        assert sid != claims_of(pair["refreshToken"])["fam"]
        successor = (await refresh(client, pair["refreshToken"])).json()
        assert claims_of(successor["accessToken"])["sid"] == sid
        other = await login(client)
        assert await me(client, pair) == await me(client, successor) == 200
        await client.post("/auth/logout", json={"refreshToken": successor["refreshToken"]})
        # At once in the process that revoked it: both access tokens of the session.
        assert await me(client, pair) == await me(client, successor) == 401
        assert await me(client, other) == 200


async def test_reuse_detection_and_revoke_subject_end_the_access_tokens(
    users: InMemoryUsers, password_storage: PasswordStorageService, store_url: str
) -> None:
    app, module = rotating_app(
        users, password_storage, settings={"store_url": store_url, "grace_seconds": 0}
    )
    async with serve(app) as client:
        stolen = await login(client)
        thief = (await refresh(client, stolen["refreshToken"])).json()
        assert await me(client, thief) == 200
        # The victim's client presents the consumed token: reuse, the family is revoked.
        assert (await refresh(client, stolen["refreshToken"])).status_code == 401
        assert await me(client, thief) == 401
        phone, laptop = await login(client), await login(client)
        assert await me(client, phone) == await me(client, laptop) == 200
        await module.revoke_subject("user-1")
        assert await me(client, phone) == await me(client, laptop) == 401


async def test_sessions_are_listed_newest_first_and_end_one_by_one(
    two_users: InMemoryUsers, password_storage: PasswordStorageService, store_url: str
) -> None:
    app, _ = rotating_app(
        two_users, password_storage, settings={"store_url": store_url}, sessions_path=SESSIONS
    )
    async with serve(app) as client:
        phone = await login_as(client, "user@example.com", "Phone/1.0 " + "x" * 400)
        await asyncio.sleep(0.01)
        laptop = await login_as(client, "user@example.com", "Laptop/2.0")
        stranger = await login_as(client, "other@example.com", "Stranger/3.0")
        answer = await client.get(SESSIONS, headers=bearer(phone))
        assert answer.status_code == 200
        assert answer.headers["cache-control"] == "no-store"
        listed = answer.json()
        assert [s["userAgent"][:9] for s in listed] == ["Laptop/2.", "Phone/1.0"]
        assert len(listed[1]["userAgent"]) == 256
        assert [s["current"] for s in listed] == [False, True]
        assert set(listed[0]) == {"id", "createdAt", "lastRefreshedAt", "userAgent", "current"}
        assert listed[1]["id"] == claims_of(phone["accessToken"])["sid"]
        assert "eyJ" not in answer.text
        laptop_id = listed[0]["id"]
        # Another user's session is "not found", and stays live.
        refused = await client.delete(f"{SESSIONS}/{laptop_id}", headers=bearer(stranger))
        assert refused.status_code == 404
        assert refused.json()["errorCode"] == "AUTH_REFRESH_SESSION_NOT_FOUND_ERROR"
        assert await me(client, laptop) == 200
        ended = await client.delete(f"{SESSIONS}/{laptop_id}", headers=bearer(phone))
        assert ended.status_code == 204
        assert await me(client, laptop) == 401
        assert (await refresh(client, laptop["refreshToken"])).status_code == 401
        for unknown in (laptop_id, "no-such-session", "x" * 5000):
            answer = await client.delete(f"{SESSIONS}/{unknown}", headers=bearer(phone))
            assert answer.status_code == 404
        assert [s["id"] for s in (await client.get(SESSIONS, headers=bearer(phone))).json()] == [
            claims_of(phone["accessToken"])["sid"]
        ]


async def test_revoke_others_keeps_the_current_session_only(
    two_users: InMemoryUsers, password_storage: PasswordStorageService, store_url: str
) -> None:
    app, _ = rotating_app(
        two_users, password_storage, settings={"store_url": store_url}, sessions_path=SESSIONS
    )
    async with serve(app) as client:
        here = await login(client)
        others = [await login(client) for _ in range(2)]
        stranger = await login_as(client, "other@example.com", "Stranger/3.0")
        answer = await client.post(f"{SESSIONS}/revoke-others", headers=bearer(here))
        assert answer.status_code == 204
        assert await me(client, here) == 200
        assert [await me(client, pair) for pair in others] == [401, 401]
        assert await me(client, stranger) == 200
        listed = (await client.get(SESSIONS, headers=bearer(here))).json()
        assert [(s["id"], s["current"]) for s in listed] == [
            (claims_of(here["accessToken"])["sid"], True)
        ]


async def test_the_routes_need_a_live_access_token(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = rotating_app(users, password_storage, sessions_path=SESSIONS)
    async with serve(app) as client:
        pair = await login(client)
        for method, path in (
            ("GET", SESSIONS),
            ("DELETE", SESSIONS + "/" + claims_of(pair["accessToken"])["sid"]),
            ("POST", SESSIONS + "/revoke-others"),
        ):
            for headers in ({}, {"Authorization": "Bearer " + pair["refreshToken"]}):
                answer = await client.request(method, path, headers=headers)
                assert answer.status_code == 401, (method, path)
                assert answer.json()["errorCode"] == "AUTH_JWT_NOT_AUTHORIZED_ERROR"
        await client.post("/auth/logout", json={"refreshToken": pair["refreshToken"]})
        assert (await client.get(SESSIONS, headers=bearer(pair))).status_code == 401


async def test_the_client_ip_is_kept_only_when_asked_for(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    for kept in (False, True):
        app, module = rotating_app(
            users,
            password_storage,
            settings={"session_client_ip": kept},
            sessions_path=SESSIONS,
        )
        async with serve(app) as client:
            pair = await login(client)
            (session,) = await module.list_sessions("user-1")
            assert session.client_ip == ("127.0.0.1" if kept else None)
            (listed,) = (await client.get(SESSIONS, headers=bearer(pair))).json()
            assert ("clientIp" in listed) is kept


async def test_the_python_api_is_scoped_to_the_owner(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, module = rotating_app(users, password_storage)
    async with serve(app) as client:
        first, second = await login(client), await login(client)
        sessions = await module.list_sessions("user-1")
        assert [s.session_id for s in sessions] == [
            claims_of(pair["accessToken"])["sid"] for pair in (second, first)
        ]
        with pytest.raises(SessionNotFoundError):
            await module.revoke_session("user-2", sessions[0].session_id)
        assert await module.revoke_other_sessions("user-1", keep=sessions[0].session_id) == 1
        assert [await me(client, pair) for pair in (first, second)] == [401, 200]
        await module.revoke_session("user-1", sessions[0].session_id)
        assert await module.list_sessions("user-1") == []


async def test_tokens_without_a_session_keep_todays_behaviour(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    stateless, _ = rotating_app(
        users, password_storage, settings={"rotation": False}, logout_path=None
    )
    async with serve(stateless) as client:
        pair = await login(client)
        assert "sid" not in claims_of(pair["accessToken"])
        assert await me(client, pair) == 200
    rotating, module = rotating_app(users, password_storage)
    async with serve(rotating) as client:
        # Issued before this change (no sid), under the same keys: still accepted.
        assert await me(client, pair) == 200
        await module.revoke_subject("user-1")
        assert await me(client, pair) == 200


class CountingStore(SqliteRefreshTokenStore):
    """One worker's store: counts the guard's reads."""

    reads = 0

    async def session_active(self, session_id: str, *, now: float) -> bool:
        self.reads += 1
        await asyncio.sleep(0.01)  # concurrent checks overlap this read
        return await super().session_active(session_id, now=now)


async def test_the_guard_reads_a_session_once_per_interval_and_sees_other_workers(
    users: InMemoryUsers, password_storage: PasswordStorageService, tmp_path: Path
) -> None:
    interval = 0.3
    path = str(tmp_path / "families.db")
    store = CountingStore(path)
    app, module = rotating_app(
        users, password_storage, settings={"session_check_interval": interval}
    )
    module.container.store.override(store)
    async with serve(app) as client:
        pair = await login(client)
        store.reads = 0  # the startup's readiness probe read once
        statuses = await asyncio.gather(*(me(client, pair) for _ in range(20)))
        assert set(statuses) == {200}
        assert store.reads == 1
        # Another worker (its own store and cache, the same file) ends the session.
        other_worker = SqliteRefreshTokenStore(path)
        sid = claims_of(pair["accessToken"])["sid"]
        assert await other_worker.revoke_session("user-1", sid, now=time.time())
        await other_worker.close()
        deadline = time.monotonic() + 1.0
        while await me(client, pair) == 200:
            assert time.monotonic() < deadline, "the revocation was not seen within 1 s"
            await asyncio.sleep(0.05)
        # One read per interval at most, and none once it is known revoked.
        reads = store.reads
        assert reads <= 2 + 1.0 / interval
        assert await me(client, pair) == 401
        assert store.reads == reads
    await store.close()


async def test_openapi_documents_the_routes_with_the_access_token_scheme(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = rotating_app(users, password_storage, sessions_path=SESSIONS)
    async with serve(app) as client:
        schema = (await client.get("/openapi.json")).json()
    paths = schema["paths"]
    documented = {
        ("get", SESSIONS): {"200", "401", "503"},
        ("delete", SESSIONS + "/{session_id}"): {"204", "401", "404", "503"},
        ("post", SESSIONS + "/revoke-others"): {"204", "401", "503"},
    }
    for (method, path), statuses in documented.items():
        operation = paths[path][method]
        assert operation["security"] == [{"AccessToken": []}]
        assert statuses <= set(operation["responses"])
        assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
    listed = paths[SESSIONS]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert listed["type"] == "array"
    assert schema["components"]["securitySchemes"]["AccessToken"]["scheme"] == "bearer"


class GatedStore(MemoryRefreshTokenStore):
    """A memory store whose session reads wait for the test to open the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.reads = 0

    async def session_active(self, session_id: str, *, now: float) -> bool:
        self.reads += 1
        await self.gate.wait()
        return await super().session_active(session_id, now=now)


async def test_a_request_that_goes_away_does_not_end_the_read_others_share() -> None:
    store, cache = GatedStore(), SessionCache()
    now = time.time()
    await store.start_family(
        "family-1",
        "user-1",
        "token-1",
        token_expires_at=now + 600,
        now=now,
        absolute_lifetime=3600,
        session=SessionStart("session-1"),
        max_sessions=100,
    )
    checks = [
        asyncio.create_task(
            cache.is_active(store, "session-1", "user-1", clock=time.time, interval=1.0, stale=0.0)
        )
        for _ in range(2)
    ]
    await asyncio.sleep(0.01)
    checks[0].cancel()  # its client disconnected
    store.gate.set()
    assert await checks[1] is True
    assert checks[0].cancelled()
    assert store.reads == 1


async def test_the_session_list_is_paged_with_a_link_to_the_next_page(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = rotating_app(
        users, password_storage, settings={"store_url": "memory://"}, sessions_path=SESSIONS
    )
    async with serve(app) as client:
        pairs = [await login_as(client, "user@example.com", f"Agent/{n}") for n in range(5)]
        caller = bearer(pairs[-1])
        first = await client.get(SESSIONS, params={"limit": 2}, headers=caller)
        assert first.status_code == 200
        assert [s["userAgent"] for s in first.json()] == ["Agent/4", "Agent/3"]
        url, rel = first.headers["Link"].split("; ")
        assert rel == 'rel="next"'
        next_url = httpx.URL(url.strip("<>"))
        assert next_url.path == SESSIONS
        assert next_url.params["limit"] == "2"
        second = await client.get(next_url, headers=caller)
        assert [s["userAgent"] for s in second.json()] == ["Agent/2", "Agent/1"]
        last = await client.get(second.headers["Link"].split(";")[0].strip("<>"), headers=caller)
        assert [s["userAgent"] for s in last.json()] == ["Agent/0"]
        assert "Link" not in last.headers
        # A page exactly as long as what is left announces no next one.
        assert (
            "Link" not in (await client.get(SESSIONS, params={"limit": 5}, headers=caller)).headers
        )


@pytest.mark.parametrize(
    "query",
    [
        {"limit": "0"},
        {"limit": "101"},
        {"limit": "-1"},
        {"limit": "two"},
        {"limit": "1e2"},
        {"limit": "٣"},  # a digit, but not an ASCII one
        {"cursor": "not base64!"},
        {"cursor": "bm8gY29sb24"},  # "no colon"
        {"cursor": "bmFuOnNlc3Npb24"},  # "nan:session"
        {"cursor": "MTox" + "A" * 400},
        {"cursor": "MTo"},  # not "<createdAt>~<id>"
        {"cursor": "1.5~short"},
        {"cursor": "nan~" + "A" * 43},
    ],
)
async def test_a_bad_page_request_is_a_400_before_any_store(
    users: InMemoryUsers, password_storage: PasswordStorageService, query: dict[str, str]
) -> None:
    app, _ = rotating_app(
        users, password_storage, settings={"store_url": "memory://"}, sessions_path=SESSIONS
    )
    async with serve(app) as client:
        pair = await login_as(client, "user@example.com", "Agent/1")
        answer = await client.get(SESSIONS, params=query, headers=bearer(pair))
        assert answer.status_code == 400
        assert answer.json()["errorCode"] == "AUTH_REFRESH_INVALID_REQUEST_ERROR"


async def test_the_list_documents_its_page_parameters_and_link(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = rotating_app(
        users, password_storage, settings={"store_url": "memory://"}, sessions_path=SESSIONS
    )
    async with serve(app) as client:
        schema = (await client.get("/openapi.json")).json()
    operation = schema["paths"][SESSIONS]["get"]
    parameters = {parameter["name"]: parameter["schema"] for parameter in operation["parameters"]}
    assert parameters["limit"] == {"type": "integer", "minimum": 1, "maximum": 100, "default": 50}
    assert parameters["cursor"]["type"] == "string"
    assert "Link" in operation["responses"]["200"]["headers"]
    assert "400" in operation["responses"]


async def test_a_login_beyond_the_cap_ends_the_oldest_sessions_access_tokens(
    users: InMemoryUsers, password_storage: PasswordStorageService, store_url: str
) -> None:
    # Seen within the check interval, like another worker's revocation (here: at once).
    settings = {"store_url": store_url, "max_sessions_per_subject": 2, "session_check_interval": 0}
    app, _ = rotating_app(users, password_storage, settings=settings, sessions_path=SESSIONS)
    async with serve(app) as client:
        oldest = await login_as(client, "user@example.com", "Agent/1")
        assert await me(client, oldest) == 200  # now cached as live in this process
        middle = await login_as(client, "user@example.com", "Agent/2")
        newest = await login_as(client, "user@example.com", "Agent/3")
        assert await me(client, oldest) == 401
        assert (await refresh(client, oldest["refreshToken"])).status_code == 401
        assert await me(client, middle) == await me(client, newest) == 200
        listed = (await client.get(SESSIONS, headers=bearer(newest))).json()
        assert [session["userAgent"] for session in listed] == ["Agent/3", "Agent/2"]


async def test_a_full_page_of_a_hundred_still_links_to_the_next(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    settings = {"store_url": "memory://", "max_sessions_per_subject": 200}
    app, module = rotating_app(users, password_storage, settings=settings, sessions_path=SESSIONS)
    async with serve(app) as client:
        pair = await login_as(client, "user@example.com", "Agent/0")
        for _ in range(100):
            await module.issue_for_subject("user-1")
        first = await client.get(SESSIONS, params={"limit": 100}, headers=bearer(pair))
        assert len(first.json()) == 100
        last = await client.get(
            first.headers["Link"].split(";")[0].strip("<>"), headers=bearer(pair)
        )
        assert len(last.json()) == 1
        assert "Link" not in last.headers


async def test_any_cursor_of_the_documented_form_is_a_position_in_the_list(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = rotating_app(
        users, password_storage, settings={"store_url": "memory://"}, sessions_path=SESSIONS
    )
    async with serve(app) as client:
        pair = await login_as(client, "user@example.com", "Agent/1")
        # Before every session: an empty page; after every one: the whole list.
        early = await client.get(SESSIONS, params={"cursor": "1~" + "A" * 43}, headers=bearer(pair))
        assert early.status_code == 200
        assert early.json() == []
        late = "99999999999~" + "_" * 42 + "w"
        assert (
            len((await client.get(SESSIONS, params={"cursor": late}, headers=bearer(pair))).json())
            == 1
        )


@pytest.mark.parametrize("where", ["root_path", "mount", "prefix"])
async def test_the_next_page_link_is_where_the_client_sees_the_route(
    users: InMemoryUsers, password_storage: PasswordStorageService, where: str
) -> None:
    app, module = rotating_app(
        users, password_storage, settings={"store_url": "memory://"}, sessions_path=SESSIONS
    )
    if where == "root_path":  # behind a proxy that strips /api
        app.root_path, base, served, path = "/api", "/api", app, SESSIONS
    elif where == "prefix":  # the module's router included under /v1
        module = AuthRefreshModule.for_root(
            user_lookup_service=users, settings={"store_url": "memory://"}, sessions_path=SESSIONS
        )
        app = served = FastAPI()
        app.include_router(module.router, prefix="/v1")
        app.include_router(AuthJwtModule.for_root(user_lookup_service=users).router)
        base, path = "/v1", "/v1" + SESSIONS
    else:
        served = FastAPI()
        served.mount("/sub", app)
        base, path = "/sub", "/sub" + SESSIONS
    async with app.router.lifespan_context(app), serve(served) as client:
        await module.issue_for_subject("user-1")
        pair = await module.issue_for_subject("user-1")
        answer = await client.get(path, params={"limit": 1}, headers=bearer(pair))
        assert answer.status_code == 200, answer.text
        link = httpx.URL(answer.headers["Link"].split(";")[0].strip("<>"))
        assert link.path == base + SESSIONS
