"""Session ids a client sends are checked before any store sees them: a NUL, an overlong or a
malformed id is "not found" (404) on the routes and in the Python API, with no store call and
no warning, in every store (PostgreSQL refused a NUL with a 503 and a closed connection)."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import jwt
import pytest

from auth_refresh import RefreshTokenStore, SessionNotFoundError, open_store
from auth_refresh.stores.sealing import SESSION_ID_FORMAT, session_id_of
from conftest import ACCESS_SECRET, InMemoryUsers, serve
from factories import login
from rotation_app import claims_of, rotating_app

pytestmark = pytest.mark.anyio

SESSIONS = "/auth/sessions"
KNOWN = session_id_of("family-1")
NOT_SESSION_IDS = [
    "x\x00",
    KNOWN[:20] + "\x00" + KNOWN[21:],
    "x" * 5000,
    KNOWN + "A",  # one character too long
    KNOWN[:-1],  # one too short
    KNOWN[:-1] + "B",  # the last character carries bits a digest's never does
    KNOWN[:-1] + "=",
    KNOWN[:42] + "\n",
    "é" * 43,
    "no-such-session",
    "",
]
# The same ids in a URL path (an empty one is the list route itself).
IN_PATHS = [quote(i, safe="") for i in NOT_SESSION_IDS if i]


class CountingStore:
    """A real store that records every call made to it."""

    def __init__(self, store: RefreshTokenStore) -> None:
        self.store = store
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.store, name)
        if not callable(attribute):
            return attribute

        def counted(*arguments: Any, **options: Any) -> Any:
            self.calls.append((name, arguments))
            return attribute(*arguments, **options)

        return counted


@pytest.fixture
def counted_store(store_url: str) -> CountingStore:
    # store_url is each kind in turn, Redis and Redis Cluster emptied first.
    return CountingStore(open_store(store_url))


def test_the_format_is_what_session_id_of_makes() -> None:
    assert all(SESSION_ID_FORMAT.fullmatch(session_id_of(f"family-{n}")) for n in range(2000))
    assert not any(SESSION_ID_FORMAT.fullmatch(i) for i in NOT_SESSION_IDS)


async def test_ids_not_of_a_sessions_form_are_not_found_without_a_store_call(
    users: InMemoryUsers,
    password_storage: Any,
    counted_store: CountingStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The caller's own session is read once, then cached for a minute: any call is the id's.
    app, module = rotating_app(
        users,
        password_storage,
        settings={"session_check_interval": 60},
        sessions_path=SESSIONS,
    )
    module.container.store.override(counted_store)
    try:
        async with serve(app) as client:
            pair = await login(client)
            bearer = {"Authorization": "Bearer " + pair["accessToken"]}
            assert (await client.get(SESSIONS, headers=bearer)).status_code == 200
            counted_store.calls.clear()
            caplog.clear()
            for path_id in IN_PATHS:
                answer = await client.delete(f"{SESSIONS}/{path_id}", headers=bearer)
                assert answer.status_code == 404, (path_id, answer.text)
                assert answer.json()["errorCode"] == "AUTH_REFRESH_SESSION_NOT_FOUND_ERROR"
                assert "retry-after" not in answer.headers
            for session_id in NOT_SESSION_IDS:
                with pytest.raises(SessionNotFoundError):
                    await module.revoke_session("user-1", session_id)
                assert await module.session_active(session_id, "user-1") is False
                rotation = module.container.rotation()
                assert await rotation.revoke_session("user-1", session_id) is False
                assert await rotation.session_active(session_id, "user-1") is False
            assert counted_store.calls == []
            assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
            # A well-formed id is the store's to judge: the count above could have failed.
            unknown = await client.delete(f"{SESSIONS}/{KNOWN}", headers=bearer)
            assert unknown.status_code == 404
            assert ("revoke_session", ("user-1", KNOWN)) in counted_store.calls
            # And the caller's own session still ends.
            sid = claims_of(pair["accessToken"])["sid"]
            ended = await client.delete(f"{SESSIONS}/{sid}", headers=bearer)
            assert ended.status_code == 204
    finally:
        await counted_store.close()


async def test_an_access_token_naming_no_session_form_is_refused_asking_no_store(
    users: InMemoryUsers, password_storage: Any, counted_store: CountingStore
) -> None:
    # Signed with the application's key (a key holder's mistake, or another issuer's sid).
    app, module = rotating_app(users, password_storage)
    module.container.store.override(counted_store)
    try:
        async with serve(app) as client:
            access = (await login(client))["accessToken"]
            header = jwt.get_unverified_header(access)
            counted_store.calls.clear()
            for session_id in NOT_SESSION_IDS:
                claims = {**claims_of(access), "sid": session_id}
                forged = jwt.encode(claims, ACCESS_SECRET, algorithm="HS256", headers=header)
                answer = await client.get("/me", headers={"Authorization": "Bearer " + forged})
                assert answer.status_code == 401, session_id
            assert counted_store.calls == []
            assert (
                await client.get("/me", headers={"Authorization": "Bearer " + access})
            ).is_success
            assert [name for name, _ in counted_store.calls] == ["session_active"]
    finally:
        await counted_store.close()
