"""Rotation over HTTP: a login starts a token family, each refresh rotates it, a repeat within
the grace window gets the same pair, reuse revokes the family, and the settings that steer it."""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from starlette.requests import Request

from auth_refresh import (
    AuthenticationModule,
    AuthRefreshGuard,
    AuthRefreshModule,
    AuthRefreshSettings,
    ConfigurationError,
    ExtractJwt,
    JwtModule,
    PasswordStorageService,
    TokenReuseEvent,
)
from auth_refresh.settings import build_settings
from conftest import InMemoryUsers, User, serve
from factories import assert_unauthorized, login
from rotation_app import Clock, claims_of, refresh, rotating_app

pytestmark = pytest.mark.anyio


@pytest.fixture
def clock() -> Clock:
    return Clock()


@dataclass
class AccountUser:
    id: str
    username: str
    active: bool = True
    password_hash: str = ""


async def test_a_login_starts_a_family_and_each_refresh_rotates_it(
    users: InMemoryUsers, password_storage: PasswordStorageService, clock: Clock, tmp_path: Path
) -> None:
    settings = {"store_url": f"sqlite:///{tmp_path / 'families.db'}"}
    app, _ = rotating_app(users, password_storage, settings=settings, clock=clock)
    async with serve(app) as client:
        pair = await login(client)
        first = claims_of(pair["refreshToken"])
        assert isinstance(first["fam"], str)
        assert len(first["fam"]) >= 22
        rotated = await refresh(client, pair["refreshToken"])
        assert rotated.status_code == 200
        assert rotated.headers["cache-control"] == "no-store"
        second = claims_of(rotated.json()["refreshToken"])
        assert second["fam"] == first["fam"]
        assert second["jti"] != first["jti"]
        me = await client.get(
            "/me", headers={"Authorization": f"Bearer {rotated.json()['accessToken']}"}
        )
        assert me.json() == {"id": "user-1"}
        again = await refresh(client, rotated.json()["refreshToken"])
        assert again.status_code == 200
        # A second login is a second family.
        assert claims_of((await login(client))["refreshToken"])["fam"] != first["fam"]


async def test_a_repeat_within_the_grace_window_gets_the_same_pair(
    users: InMemoryUsers, password_storage: PasswordStorageService, clock: Clock
) -> None:
    app, _ = rotating_app(users, password_storage, clock=clock)
    async with serve(app) as client:
        token = (await login(client))["refreshToken"]
        first = await refresh(client, token)
        clock.advance(4.9)  # AUTH_REFRESH_GRACE_SECONDS defaults to 5
        second = await refresh(client, token)
        assert second.status_code == 200
        assert second.json() == first.json()
        # The pair is the family's live one: it rotates as usual.
        assert (await refresh(client, first.json()["refreshToken"])).status_code == 200


def slow_app(
    users: InMemoryUsers, password_storage: PasswordStorageService, clock: Clock
) -> tuple[FastAPI, list[float]]:
    """The rotating app whose requests take as long as the test says to reach the store: each
    delay in the list is spent (on the clock) by one request between arrival and store step."""
    delays: list[float] = []
    service = JwtModule.for_root().service

    async def slow_verify(token: str) -> dict[str, Any]:
        if delays:
            clock.advance(delays.pop(0))
        return service.verify("refresh", token)

    app, _ = rotating_app(
        users, password_storage, settings={"verify_token": slow_verify}, clock=clock
    )
    return app, delays


async def test_the_grace_window_counts_from_the_arrival_not_the_store_step(
    users: InMemoryUsers, password_storage: PasswordStorageService, clock: Clock
) -> None:
    app, delays = slow_app(users, password_storage, clock)
    async with serve(app) as client:
        token = (await login(client))["refreshToken"]
        first = await refresh(client, token)
        clock.advance(4)
        # Arrived 4 s after the first (within the 5 s window), reached the store 3 s later.
        delays.append(3)
        second = await refresh(client, token)
        assert second.status_code == 200, second.text
        assert second.json() == first.json()
        assert (await refresh(client, first.json()["refreshToken"])).status_code == 200


async def test_no_more_delay_than_the_grace_window_is_credited(
    users: InMemoryUsers, password_storage: PasswordStorageService, clock: Clock
) -> None:
    # A request whose body trickles in for minutes must not stretch the window with it.
    app, delays = slow_app(users, password_storage, clock)
    async with serve(app) as client:
        token = (await login(client))["refreshToken"]
        first = await refresh(client, token)
        assert first.status_code == 200
        clock.advance(4)
        delays.append(60)
        assert_unauthorized(await refresh(client, token))
        # That was reuse: the family is revoked.
        assert_unauthorized(await refresh(client, first.json()["refreshToken"]))


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_reuse_after_the_window_revokes_the_family_and_tells_the_hook(
    users: InMemoryUsers,
    password_storage: PasswordStorageService,
    clock: Clock,
    asynchronous: bool,
) -> None:
    events: list[TokenReuseEvent] = []

    def record(event: TokenReuseEvent) -> None:
        events.append(event)

    async def record_async(event: TokenReuseEvent) -> None:
        events.append(event)

    settings = {"on_token_reuse": record_async if asynchronous else record}
    app, _ = rotating_app(users, password_storage, settings=settings, clock=clock)
    async with serve(app) as client:
        stolen = (await login(client))["refreshToken"]
        other_session = (await login(client))["refreshToken"]
        live = (await refresh(client, stolen)).json()["refreshToken"]
        clock.advance(5)
        assert_unauthorized(await refresh(client, stolen))
        assert events == [TokenReuseEvent(claims_of(stolen)["fam"], "user-1", clock.now)]
        # The newest token of the family is revoked with it; other sessions are not.
        assert_unauthorized(await refresh(client, live))
        assert (await refresh(client, other_session)).status_code == 200
        # A revoked family does not report again.
        assert_unauthorized(await refresh(client, stolen))
        assert len(events) == 1


async def test_a_failing_reuse_hook_does_not_change_the_answer(
    users: InMemoryUsers,
    password_storage: PasswordStorageService,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(event: TokenReuseEvent) -> None:
        raise RuntimeError("the alerting service is down")

    app, _ = rotating_app(users, password_storage, settings={"on_token_reuse": broken}, clock=clock)
    async with serve(app) as client:
        token = (await login(client))["refreshToken"]
        await refresh(client, token)
        clock.advance(60)
        with caplog.at_level(logging.WARNING, logger="auth_refresh.security"):
            assert_unauthorized(await refresh(client, token))
    assert "refresh token reused: family revoked" in caplog.text
    assert "on_token_reuse failed" in caplog.text


async def test_without_a_grace_window_a_repeat_revokes_at_once(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = rotating_app(users, password_storage, settings={"grace_seconds": 0})
    async with serve(app) as client:
        token = (await login(client))["refreshToken"]
        first = await refresh(client, token)
        assert first.status_code == 200
        assert_unauthorized(await refresh(client, token))
        assert_unauthorized(await refresh(client, first.json()["refreshToken"]))


async def test_every_refusal_looks_the_same_to_the_client(
    users: InMemoryUsers, password_storage: PasswordStorageService, clock: Clock
) -> None:
    app, _ = rotating_app(
        users, password_storage, settings={"absolute_lifetime": 3600}, clock=clock
    )
    elsewhere, _ = rotating_app(users, password_storage)
    async with serve(app) as client, serve(elsewhere) as other_client:
        reused = (await login(client))["refreshToken"]
        await refresh(client, reused)
        logged_out = (await login(client))["refreshToken"]
        logout = await client.post("/auth/logout", json={"refreshToken": logged_out})
        assert logout.status_code == 204
        # Signed with the same key, but its family lives in another application's store.
        unknown = (await login(other_client))["refreshToken"]
        stateless = AuthenticationModule.for_root().issue_token_service.refresh_token(
            {"sub": "user-1"}
        )
        aged = (await login(client))["refreshToken"]
        clock.advance(10)
        for token in (reused, logged_out, unknown, stateless, "not-a-token"):
            assert_unauthorized(await refresh(client, token))
        assert (await refresh(client, aged)).status_code == 200
        clock.advance(3600)
        assert_unauthorized(await refresh(client, aged))


async def test_the_absolute_lifetime_caps_a_family_that_keeps_rotating(
    users: InMemoryUsers,
    password_storage: PasswordStorageService,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUTH_REFRESH_ABSOLUTE_LIFETIME", "1h")
    app, _ = rotating_app(users, password_storage, clock=clock)
    async with serve(app) as client:
        token = (await login(client))["refreshToken"]
        for _ in range(3):
            clock.advance(1000)
            answer = await refresh(client, token)
            assert answer.status_code == 200
            token = answer.json()["refreshToken"]
        clock.advance(600)
        assert_unauthorized(await refresh(client, token))


async def test_no_refresh_token_outlives_its_family(
    users: InMemoryUsers, password_storage: PasswordStorageService, clock: Clock
) -> None:
    app, _ = rotating_app(
        users, password_storage, settings={"absolute_lifetime": 3600}, clock=clock
    )
    async with serve(app) as client:
        logged_in_at = int(clock.now)
        token = (await login(client))["refreshToken"]
        first = claims_of(token)
        assert first["auth_time"] == logged_in_at
        # The refresh lifetime is 7 days; the family ends an hour after the login.
        assert first["exp"] == logged_in_at + 3600
        clock.advance(1000)
        rotated = await refresh(client, token)
        successor = claims_of(rotated.json()["refreshToken"])
        # The successor carries the login's time, not its own.
        assert successor["auth_time"] == logged_in_at
        assert successor["exp"] == logged_in_at + 3600


async def test_missing_and_inactive_users_cannot_refresh(
    password_storage: PasswordStorageService,
) -> None:
    accounts = InMemoryUsers()
    accounts.users = {
        "active": AccountUser("active", "a@example.com"),
        "disabled": AccountUser("disabled", "d@example.com", active=False),
        "gone": AccountUser("gone", "g@example.com"),
    }
    app, module = rotating_app(accounts, password_storage)
    async with serve(app) as client:
        tokens = {
            subject: (await module.issue_for_subject(subject))["refreshToken"]
            for subject in accounts.users
        }
        del accounts.users["gone"]
        assert (await refresh(client, tokens["active"])).status_code == 200
        assert_unauthorized(await refresh(client, tokens["disabled"]))
        assert_unauthorized(await refresh(client, tokens["gone"]))


async def test_a_mapping_user_with_active_false_cannot_refresh() -> None:
    class MappingUsers:
        def __init__(self) -> None:
            self.active = True

        def by_subject(self, subject: str) -> dict[str, Any]:
            return {"id": subject, "active": self.active}

    lookup = MappingUsers()
    module = AuthRefreshModule.for_root(user_lookup_service=lookup)
    app = FastAPI()
    module.attach(app)
    async with serve(app) as client:
        token = (await module.issue_for_subject("user-1"))["refreshToken"]
        token = (await refresh(client, token)).json()["refreshToken"]
        lookup.active = False
        assert_unauthorized(await refresh(client, token))


async def test_revoke_subject_logs_out_everywhere_and_revoke_family_one_session(
    password_storage: PasswordStorageService,
) -> None:
    accounts = InMemoryUsers(User("user-1", "one@example.com"), User("user-2", "two@example.com"))
    app, module = rotating_app(accounts, password_storage)
    async with serve(app) as client:
        phone, laptop, tablet = [
            (await module.issue_for_subject("user-1"))["refreshToken"] for _ in range(3)
        ]
        bystander = (await module.issue_for_subject("user-2"))["refreshToken"]
        await module.revoke_family(claims_of(tablet)["fam"])
        assert_unauthorized(await refresh(client, tablet))
        laptop = (await refresh(client, laptop)).json()["refreshToken"]
        await module.revoke_subject("user-1")  # e.g. after a password change
        assert_unauthorized(await refresh(client, phone))
        assert_unauthorized(await refresh(client, laptop))
        assert (await refresh(client, bystander)).status_code == 200
        later = (await module.issue_for_subject("user-1"))["refreshToken"]
        assert (await refresh(client, later)).status_code == 200


async def test_stateless_mode_keeps_the_original_behaviour_and_warns_at_startup(
    users: InMemoryUsers,
    password_storage: PasswordStorageService,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("AUTH_REFRESH_ROTATION", "false")
    # Never opened without rotation: this directory does not even exist.
    monkeypatch.setenv("AUTH_REFRESH_STORE_URL", f"sqlite:///{tmp_path}/missing/families.db")
    app, module = rotating_app(users, password_storage, logout_path=None)
    with caplog.at_level(logging.WARNING, logger="auth_refresh"):
        async with serve(app) as client:
            token = (await login(client))["refreshToken"]
            assert "fam" not in claims_of(token)
            # The original's behaviour: the same token refreshes again and again.
            for _ in range(3):
                assert (await refresh(client, token)).status_code == 200
            with pytest.raises(ConfigurationError, match="needs rotation"):
                await module.revoke_subject("user-1")
            with pytest.raises(ConfigurationError, match="needs rotation"):
                await module.revoke_family(claims_of(token)["jti"])
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "AUTH_REFRESH_ROTATION is false" in warnings[0].getMessage()


async def test_a_stateless_registration_refuses_the_tokens_a_rotating_one_revoked(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    """Issue 11's mixed configuration: one keyring, a rotating global registration and a
    stateless feature. A token of a family is judged only where the family is kept."""
    app, _ = rotating_app(users, password_storage)
    stateless = AuthRefreshModule.register(
        settings={"rotation": False}, path="/auth/stateless/refresh"
    )
    stateless.attach(app)
    async with serve(app) as client:
        token = (await login(client))["refreshToken"]
        assert "fam" in claims_of(token)
        # Refused before the logout as after it: this registration cannot tell the two apart.
        assert_unauthorized(
            await client.post("/auth/stateless/refresh", json={"refreshToken": token})
        )
        logout = await client.post("/auth/logout", json={"refreshToken": token})
        assert logout.status_code == 204
        assert_unauthorized(await refresh(client, token))
        for _ in range(3):
            assert_unauthorized(
                await client.post("/auth/stateless/refresh", json={"refreshToken": token})
            )
        # Its own tokens, which name no family, refresh there and nowhere else.
        own = (await stateless.issue_for_subject("user-1"))["refreshToken"]
        assert "fam" not in claims_of(own)
        ok = await client.post("/auth/stateless/refresh", json={"refreshToken": own})
        assert ok.status_code == 200, ok.text
        assert_unauthorized(await refresh(client, own))


async def test_rotation_on_logs_no_warning(
    users: InMemoryUsers,
    password_storage: PasswordStorageService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, _ = rotating_app(users, password_storage)
    with caplog.at_level(logging.WARNING, logger="auth_refresh"):
        async with serve(app):
            pass
    assert caplog.records == []


async def test_logout_without_rotation_is_refused_at_startup(
    users: InMemoryUsers, password_storage: PasswordStorageService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTH_REFRESH_ROTATION", "false")
    app, _ = rotating_app(users, password_storage, logout_path="/auth/logout")
    with pytest.raises(ConfigurationError, match="POST /auth/logout needs rotation"):
        async with serve(app):
            pass


async def test_a_feature_with_the_same_store_url_shares_the_global_store(
    users: InMemoryUsers, password_storage: PasswordStorageService, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = rotating_app(users, password_storage)
    AuthRefreshModule.register(
        settings={"jwt_from_request": ExtractJwt.from_auth_header_as_bearer_token()},
        path="/auth/mobile/refresh",
    ).attach(app)
    with caplog.at_level(logging.WARNING, logger="auth_refresh"):
        async with serve(app) as client:
            token = (await login(client))["refreshToken"]
            mobile = await client.post(
                "/auth/mobile/refresh", headers={"Authorization": f"Bearer {token}"}
            )
            assert mobile.status_code == 200
            # The successor is live in the one store the web route uses too.
            web = await refresh(client, mobile.json()["refreshToken"])
            assert web.status_code == 200
    assert not [r for r in caplog.records if "store_url" in r.getMessage()]


async def test_a_feature_with_its_own_store_url_has_its_own_store_and_says_so(
    users: InMemoryUsers,
    password_storage: PasswordStorageService,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, _ = rotating_app(users, password_storage, settings={"store_url": "memory://"})
    AuthRefreshModule.register(
        settings={"store_url": f"sqlite:///{tmp_path / 'feature.db'}"},
        path="/auth/feature/refresh",
    ).attach(app)
    with caplog.at_level(logging.WARNING, logger="auth_refresh"):
        async with serve(app) as client:
            token = (await login(client))["refreshToken"]
            assert_unauthorized(
                await client.post("/auth/feature/refresh", json={"refreshToken": token})
            )
            assert (await refresh(client, token)).status_code == 200
    warnings = [r.getMessage() for r in caplog.records if "store_url" in r.getMessage()]
    # One warning, at startup, naming the feature and not the URLs (they may hold a password).
    assert len(warnings) == 1
    assert "is not the global registration's" in warnings[0]
    assert "feature.db" not in warnings[0]


async def test_a_route_guarded_by_the_refresh_guard_answers_with_the_successor(
    users: InMemoryUsers,
) -> None:
    module = AuthRefreshModule.for_root(user_lookup_service=users, controllers=False)
    app = FastAPI()
    module.attach(app)

    @app.post("/session/renew")
    async def renew(
        request: Request, user: Annotated[Any, Depends(AuthRefreshGuard())]
    ) -> dict[str, Any]:
        return {"successor": await module.issue(user, request), "fresh": await module.issue(user)}

    async with serve(app) as client:
        token = (await module.issue_for_subject("user-1"))["refreshToken"]
        answer = (await client.post("/session/renew", json={"refreshToken": token})).json()
    successor, fresh = answer["successor"]["refreshToken"], answer["fresh"]["refreshToken"]
    assert claims_of(successor)["fam"] == claims_of(token)["fam"]
    # Without the request, issue() starts a new family: what a login does.
    assert claims_of(fresh)["fam"] != claims_of(token)["fam"]


async def test_by_default_families_live_in_a_sqlite_file_in_the_working_directory(
    users: InMemoryUsers,
    password_storage: PasswordStorageService,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AUTH_REFRESH_STORE_URL")
    monkeypatch.chdir(tmp_path)
    app, _ = rotating_app(users, password_storage)
    async with serve(app) as client:
        token = (await login(client))["refreshToken"]
        assert (await refresh(client, token)).status_code == 200
    with sqlite3.connect(tmp_path / "auth-refresh.db") as database:
        (family,) = database.execute("SELECT family_id FROM auth_refresh_families").fetchone()
    database.close()
    assert family == claims_of(token)["fam"]


async def test_the_sqlite_store_outlives_a_restart_of_the_application(
    users: InMemoryUsers, password_storage: PasswordStorageService, tmp_path: Path
) -> None:
    settings = {"store_url": f"sqlite:///{tmp_path / 'families.db'}"}
    app, _ = rotating_app(users, password_storage, settings=settings)
    async with serve(app) as client:
        token = (await login(client))["refreshToken"]
    async with serve(app) as client:
        assert (await refresh(client, token)).status_code == 200


async def test_an_issue_service_that_drops_the_family_claim_is_a_configuration_error(
    users: InMemoryUsers,
) -> None:
    class ForgetfulIssuer:
        inner = AuthenticationModule.for_root().issue_token_service

        def access_token(self, payload: Any) -> str:
            return self.inner.access_token(payload)

        def refresh_token(self, payload: Any) -> str:
            return self.inner.refresh_token({"sub": payload["sub"]})

        def response_payload(self, user_id: str) -> Any:
            return self.inner.response_payload(user_id)

    module = AuthRefreshModule.for_root(
        user_lookup_service=users, issue_token_service=ForgetfulIssuer()
    )
    app = FastAPI()
    module.attach(app)
    async with serve(app):
        with pytest.raises(ConfigurationError, match="'fam'"):
            await module.issue_for_subject("user-1")


def test_the_settings_defaults_are_the_issues(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTH_REFRESH_STORE_URL")  # conftest's memory:// for the other tests
    settings = build_settings(AuthRefreshSettings)
    assert settings.rotation is True
    assert settings.grace_seconds == 5
    assert settings.absolute_lifetime == 30 * 86400
    assert settings.store_url == "sqlite:///auth-refresh.db"
    assert settings.on_token_reuse is None


@pytest.mark.parametrize(
    ("name", "value", "field", "expected"),
    [
        ("AUTH_REFRESH_ROTATION", "false", "rotation", False),
        ("AUTH_REFRESH_GRACE_SECONDS", "0", "grace_seconds", 0),
        ("AUTH_REFRESH_GRACE_SECONDS", "10s", "grace_seconds", 10),
        ("AUTH_REFRESH_ABSOLUTE_LIFETIME", "30d", "absolute_lifetime", 2_592_000),
        ("AUTH_REFRESH_ABSOLUTE_LIFETIME", "3600", "absolute_lifetime", 3600),
        ("AUTH_REFRESH_STORE_URL", "memory://", "store_url", "memory://"),
        ("AUTH_REFRESH_STORE_URL", "redis://127.0.0.1:6379/2", "store_url", None),
    ],
)
def test_the_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, field: str, expected: object
) -> None:
    monkeypatch.setenv(name, value)
    assert getattr(build_settings(AuthRefreshSettings), field) == (
        value if expected is None else expected
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AUTH_REFRESH_ROTATION", "maybe"),
        ("AUTH_REFRESH_GRACE_SECONDS", "-1"),
        ("AUTH_REFRESH_ABSOLUTE_LIFETIME", "0"),
        ("AUTH_REFRESH_STORE_URL", "mysql://127.0.0.1/families"),
        ("AUTH_REFRESH_STORE_URL", "sqlite://families.db"),
    ],
)
def test_bad_settings_name_the_env_var(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name):
        build_settings(AuthRefreshSettings)


async def test_a_bad_store_url_fails_at_startup(
    users: InMemoryUsers, password_storage: PasswordStorageService, tmp_path: Path
) -> None:
    settings = {"store_url": f"sqlite:///{tmp_path}/missing/families.db"}
    app, _ = rotating_app(users, password_storage, settings=settings)
    with pytest.raises(ConfigurationError, match=r"for_root: .*directory does not exist"):
        async with serve(app):
            pass
