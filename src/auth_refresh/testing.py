"""The contract every ``RefreshTokenStore`` owes, as tests a store's author runs.

With pytest, subclass ``StoreContract`` in a test module and give it a ``store_factory``
fixture (a callable, sync or async, that returns a new store); parametrize the fixture to run
the contract for several stores::

    class TestMyStore(StoreContract):
        @pytest.fixture
        def store_factory(self) -> StoreFactory:
            return MyStore

Without pytest (the module imports without it; ``StoreContract`` is then not defined),
``await check_store(MyStore)`` runs the same scenarios and raises ``AssertionError`` at the
first broken promise. Each scenario gets a store of its own from the
factory and closes it; the stores may share a backend (families have fresh random ids).
"""

from __future__ import annotations

import asyncio
import inspect
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeAlias

from auth_refresh.stores.base import (
    SESSION_PAGE_MAX,
    RefreshTokenStore,
    RotationOutcome,
    SessionCursor,
    SessionRecord,
    SessionStart,
    Successor,
)
from auth_refresh.types import TokenPair

try:
    import pytest
except ImportError:  # check_store() needs no pytest; only StoreContract does
    HAS_PYTEST = False
else:
    HAS_PYTEST = True

__all__ = ["SCENARIOS", "Family", "StoreContract", "StoreFactory", "check_store"]

StoreFactory: TypeAlias = Callable[[], RefreshTokenStore | Awaitable[RefreshTokenStore]]
Scenario: TypeAlias = Callable[[RefreshTokenStore], Awaitable[None]]

GRACE = 5.0
LIFETIME = 3600.0
IDLE = 600.0
MAX_SESSIONS = 100


def new_id() -> str:
    return secrets.token_urlsafe(16)


class Family:
    """One family in a store, driven with a clock the scenario controls."""

    def __init__(self, store: RefreshTokenStore, subject: str | None = None) -> None:
        self.store = store
        self.id = new_id()
        self.subject = subject or "subject-" + new_id()
        self.first_token = new_id()
        self.now = time.time()
        # Any id will do for a store; the rotation service gives a digest of the family id.
        self.session_id = "session-" + new_id()

    async def start(
        self,
        *,
        idle: float = IDLE,
        user_agent: str | None = None,
        client_ip: str | None = None,
        max_sessions: int = MAX_SESSIONS,
    ) -> Family:
        await self.store.start_family(
            self.id,
            self.subject,
            self.first_token,
            token_expires_at=self.now + idle,
            now=self.now,
            absolute_lifetime=LIFETIME,
            session=SessionStart(self.session_id, user_agent, client_ip),
            max_sessions=max_sessions,
        )
        return self

    async def active(self) -> bool:
        return await self.store.session_active(self.session_id, now=self.now)

    def successor(self, idle: float = IDLE) -> Successor:
        token_id = new_id()
        # Opaque to a store: what it keeps, it gives back unchanged.
        pair: TokenPair = {
            "accessToken": "sealed-a-" + token_id,
            "refreshToken": "sealed-r-" + token_id,
        }
        return Successor(token_id=token_id, pair=pair, expires_at=self.now + idle)

    async def rotate(
        self, token_id: str, *, grace: float = GRACE, idle: float = IDLE
    ) -> tuple[RotationOutcome, TokenPair | None, Successor]:
        """The outcome, the pair the store answered with, and the successor it was offered."""
        offered = self.successor(idle)
        rotation = await self.store.rotate(
            self.id,
            token_id,
            offered,
            now=self.now,
            grace_seconds=grace,
            absolute_lifetime=LIFETIME,
        )
        if rotation.outcome is not RotationOutcome.UNKNOWN:
            assert rotation.subject == self.subject, "the store answered with another subject"
        return rotation.outcome, rotation.pair, offered


async def the_live_token_rotates_once(store: RefreshTokenStore) -> None:
    family = await Family(store).start()
    outcome, pair, offered = await family.rotate(family.first_token)
    assert (outcome, pair) == (RotationOutcome.ROTATED, offered.pair)
    outcome, pair, following = await family.rotate(offered.token_id)
    assert (outcome, pair) == (RotationOutcome.ROTATED, following.pair)


async def a_repeat_within_the_grace_window_gets_the_same_successor(
    store: RefreshTokenStore,
) -> None:
    family = await Family(store).start()
    _, first, _ = await family.rotate(family.first_token)
    family.now += GRACE - 0.5
    outcome, again, _ = await family.rotate(family.first_token)
    assert (outcome, again) == (RotationOutcome.GRACE, first)


async def a_repeat_after_the_grace_window_revokes_the_family(store: RefreshTokenStore) -> None:
    family = await Family(store).start()
    _, _, live = await family.rotate(family.first_token)
    family.now += GRACE
    assert (await family.rotate(family.first_token))[:2] == (RotationOutcome.REUSED, None)
    # The newest token goes with the family.
    assert (await family.rotate(live.token_id))[:2] == (RotationOutcome.REVOKED, None)


async def without_a_grace_window_any_repeat_is_reuse(store: RefreshTokenStore) -> None:
    family = await Family(store).start()
    outcome, _, live = await family.rotate(family.first_token, grace=0)
    assert outcome is RotationOutcome.ROTATED
    assert (await family.rotate(family.first_token, grace=0))[0] is RotationOutcome.REUSED
    assert (await family.rotate(live.token_id, grace=0))[0] is RotationOutcome.REVOKED


async def a_token_older_than_the_last_one_is_reuse_even_within_the_window(
    store: RefreshTokenStore,
) -> None:
    family = await Family(store).start()
    _, _, second = await family.rotate(family.first_token)
    _, _, third = await family.rotate(second.token_id)
    assert (await family.rotate(family.first_token))[0] is RotationOutcome.REUSED
    assert (await family.rotate(third.token_id))[0] is RotationOutcome.REVOKED


async def an_unknown_family_is_unknown_and_an_unknown_token_of_a_family_is_reuse(
    store: RefreshTokenStore,
) -> None:
    family = Family(store)
    assert (await family.rotate(family.first_token))[:2] == (RotationOutcome.UNKNOWN, None)
    await family.start()
    assert (await family.rotate(new_id()))[0] is RotationOutcome.REUSED


async def the_absolute_lifetime_caps_a_family_however_often_it_rotates(
    store: RefreshTokenStore,
) -> None:
    family = await Family(store).start()
    started, token = family.now, family.first_token
    # Rotating every 500 s keeps within the 600 s idle limit, but not past the 3600 s cap.
    for step in range(8):
        family.now = started + 500 * step
        outcome, _, live = await family.rotate(token)
        assert outcome is RotationOutcome.ROTATED
        token = live.token_id
    family.now = started + LIFETIME
    assert (await family.rotate(token))[0] is RotationOutcome.EXPIRED
    assert (await family.rotate(token))[0] is RotationOutcome.UNKNOWN


async def the_live_tokens_expiry_is_the_idle_limit(store: RefreshTokenStore) -> None:
    family = await Family(store).start(idle=60)
    _, _, live = await family.rotate(family.first_token, idle=60)
    family.now += 60
    assert (await family.rotate(live.token_id))[0] is RotationOutcome.EXPIRED


async def listed(store: RefreshTokenStore, subject: str, *, now: float) -> list[SessionRecord]:
    """The first page of ``subject``'s sessions, as large as a page gets."""
    return await store.list_sessions(subject, now=now, limit=SESSION_PAGE_MAX)


async def revoke_family_refuses_that_family_only(store: RefreshTokenStore) -> None:
    revoked = await Family(store).start()
    other = await Family(store, revoked.subject).start()
    await revoked.rotate(revoked.first_token)
    await store.revoke_family(revoked.id)
    # The grace pair goes with it.
    assert (await revoked.rotate(revoked.first_token))[:2] == (RotationOutcome.REVOKED, None)
    assert (await other.rotate(other.first_token))[0] is RotationOutcome.ROTATED
    await store.revoke_family(new_id())  # revoking what is not there is no error


async def revoke_subject_logs_out_everywhere_and_later_logins_work(
    store: RefreshTokenStore,
) -> None:
    phone = await Family(store).start()
    laptop = await Family(store, phone.subject).start()
    _, _, laptop_live = await laptop.rotate(laptop.first_token)
    bystander = await Family(store).start()
    assert await store.revoke_subject(phone.subject, now=phone.now) == 2
    assert (await phone.rotate(phone.first_token))[0] is RotationOutcome.REVOKED
    assert (await laptop.rotate(laptop_live.token_id))[0] is RotationOutcome.REVOKED
    assert (await bystander.rotate(bystander.first_token))[0] is RotationOutcome.ROTATED
    later = await Family(store, phone.subject).start()
    assert (await later.rotate(later.first_token))[0] is RotationOutcome.ROTATED
    assert await store.revoke_subject("nobody-" + new_id(), now=phone.now) == 0


async def concurrent_refreshes_of_one_token_rotate_it_once(store: RefreshTokenStore) -> None:
    family = await Family(store).start()
    results = await asyncio.gather(*(family.rotate(family.first_token) for _ in range(8)))
    winners = [offered for outcome, _, offered in results if outcome is RotationOutcome.ROTATED]
    assert len(winners) == 1, "exactly one of concurrent refreshes wins"
    # The others are repeats within the grace window, answered with the winner's pair.
    assert {(outcome, str(pair)) for outcome, pair, _ in results} == {
        (RotationOutcome.ROTATED, str(winners[0].pair)),
        (RotationOutcome.GRACE, str(winners[0].pair)),
    }


async def sessions_are_listed_newest_first_with_their_labels(store: RefreshTokenStore) -> None:
    older = await Family(store).start(user_agent="Firefox/128.0", client_ip="192.0.2.7")
    newer = Family(store, older.subject)
    newer.now = older.now + 10
    await newer.start()
    await Family(store).start()  # another subject's
    sessions = await listed(store, older.subject, now=newer.now)
    assert [session.session_id for session in sessions] == [newer.session_id, older.session_id]
    first = sessions[1]
    assert (first.created_at, first.last_refreshed_at) == (older.now, older.now)
    assert (first.user_agent, first.client_ip) == ("Firefox/128.0", "192.0.2.7")
    assert (sessions[0].user_agent, sessions[0].client_ip) == (None, None)
    assert await listed(store, "nobody-" + new_id(), now=newer.now) == []


async def a_rotation_is_the_sessions_last_refresh(store: RefreshTokenStore) -> None:
    family = await Family(store).start()
    started = family.now
    family.now += 30
    await family.rotate(family.first_token)
    (session,) = await listed(store, family.subject, now=family.now)
    assert (session.created_at, session.last_refreshed_at) == (started, started + 30)
    assert await family.active()


async def a_session_ends_with_every_revocation_and_with_expiry(store: RefreshTokenStore) -> None:
    assert not await store.session_active("session-" + new_id(), now=time.time())
    by_family = await Family(store).start()
    await store.revoke_family(by_family.id)
    by_reuse = await Family(store).start()
    _, _, _ = await by_reuse.rotate(by_reuse.first_token)
    by_reuse.now += GRACE
    assert (await by_reuse.rotate(by_reuse.first_token))[0] is RotationOutcome.REUSED
    by_subject = await Family(store).start()
    assert await store.revoke_subject(by_subject.subject, now=by_subject.now) == 1
    expired = await Family(store).start(idle=60)
    assert await expired.active()
    expired.now += 60
    for ended in (by_family, by_reuse, by_subject, expired):
        assert not await ended.active()
        assert await listed(store, ended.subject, now=ended.now) == []


async def revoke_session_ends_one_live_session_of_its_subject_only(
    store: RefreshTokenStore,
) -> None:
    phone = await Family(store).start()
    laptop = await Family(store, phone.subject).start()
    stranger = await Family(store).start()
    # Another subject's session is not found, and stays live.
    assert not await store.revoke_session(stranger.subject, phone.session_id, now=phone.now)
    assert await phone.active()
    assert await store.revoke_session(phone.subject, phone.session_id, now=phone.now)
    assert not await phone.active()
    assert (await phone.rotate(phone.first_token))[0] is RotationOutcome.REVOKED
    # Ended already, or never there: not found.
    assert not await store.revoke_session(phone.subject, phone.session_id, now=phone.now)
    assert not await store.revoke_session(phone.subject, "session-" + new_id(), now=phone.now)
    sessions = await listed(store, phone.subject, now=phone.now)
    assert [session.session_id for session in sessions] == [laptop.session_id]
    assert (await laptop.rotate(laptop.first_token))[0] is RotationOutcome.ROTATED


async def a_login_beyond_the_cap_ends_the_least_recently_refreshed_session(
    store: RefreshTokenStore,
) -> None:
    first = await Family(store).start(max_sessions=3)
    families = [first]
    for offset in (1, 2):
        family = Family(store, first.subject)
        family.now = first.now + offset
        families.append(await family.start(max_sessions=3))
    # The first one refreshes: the second is now the least recently refreshed.
    first.now += 3
    _, _, first_live = await first.rotate(first.first_token)
    fourth = Family(store, first.subject)
    fourth.now = first.now + 1
    await fourth.start(max_sessions=3)
    second, third = families[1:]
    assert (await second.rotate(second.first_token))[0] is RotationOutcome.REVOKED
    assert not await second.active()
    sessions = await listed(store, first.subject, now=fourth.now)
    assert [session.session_id for session in sessions] == [
        fourth.session_id,
        third.session_id,
        first.session_id,
    ]
    assert (await first.rotate(first_live.token_id))[0] is RotationOutcome.ROTATED
    # A cap of one: a login ends every other session, never its own.
    fifth = Family(store, first.subject)
    fifth.now = fourth.now + 1
    await fifth.start(max_sessions=1)
    assert [s.session_id for s in await listed(store, first.subject, now=fifth.now)] == [
        fifth.session_id
    ]
    assert await fifth.active()


async def sessions_are_paged_in_list_order_each_once(store: RefreshTokenStore) -> None:
    first = await Family(store).start()
    families = [first]
    for offset in (0, 0, 1, 2, 2, 3):  # equal start times are ordered by session id
        family = Family(store, first.subject)
        family.now = first.now + offset
        families.append(await family.start())
    expected = sorted(families, key=lambda f: (f.now, f.session_id), reverse=True)
    now = first.now + 10
    pages: list[list[str]] = []
    after: SessionCursor | None = None
    while True:
        page = await store.list_sessions(first.subject, now=now, limit=3, after=after)
        assert len(page) <= 3
        if not page:
            break
        pages.append([session.session_id for session in page])
        after = SessionCursor.of(page[-1])
    assert [sid for page in pages for sid in page] == [f.session_id for f in expected]
    assert [len(page) for page in pages] == [3, 3, 1]


async def revoke_other_sessions_keeps_one_and_counts_the_rest(store: RefreshTokenStore) -> None:
    phone = await Family(store).start()
    laptop = await Family(store, phone.subject).start()
    tablet = await Family(store, phone.subject).start()
    await store.revoke_family(tablet.id)  # ended already: not counted
    stranger = await Family(store).start()
    assert await store.revoke_other_sessions(phone.subject, laptop.session_id, now=phone.now) == 1
    assert [s.session_id for s in await listed(store, phone.subject, now=phone.now)] == [
        laptop.session_id
    ]
    assert (await phone.rotate(phone.first_token))[0] is RotationOutcome.REVOKED
    assert (await laptop.rotate(laptop.first_token))[0] is RotationOutcome.ROTATED
    assert await stranger.active()
    # Keeping none (a caller without a session) ends them all.
    assert await store.revoke_other_sessions(phone.subject, None, now=phone.now) == 1
    assert await listed(store, phone.subject, now=phone.now) == []


SCENARIOS: tuple[Scenario, ...] = (
    the_live_token_rotates_once,
    a_repeat_within_the_grace_window_gets_the_same_successor,
    a_repeat_after_the_grace_window_revokes_the_family,
    without_a_grace_window_any_repeat_is_reuse,
    a_token_older_than_the_last_one_is_reuse_even_within_the_window,
    an_unknown_family_is_unknown_and_an_unknown_token_of_a_family_is_reuse,
    the_absolute_lifetime_caps_a_family_however_often_it_rotates,
    the_live_tokens_expiry_is_the_idle_limit,
    revoke_family_refuses_that_family_only,
    revoke_subject_logs_out_everywhere_and_later_logins_work,
    concurrent_refreshes_of_one_token_rotate_it_once,
    sessions_are_listed_newest_first_with_their_labels,
    a_rotation_is_the_sessions_last_refresh,
    a_session_ends_with_every_revocation_and_with_expiry,
    revoke_session_ends_one_live_session_of_its_subject_only,
    a_login_beyond_the_cap_ends_the_least_recently_refreshed_session,
    sessions_are_paged_in_list_order_each_once,
    revoke_other_sessions_keeps_one_and_counts_the_rest,
)


async def run_scenario(store_factory: StoreFactory, scenario: Scenario) -> None:
    """``scenario`` on a new store from ``store_factory``, closed afterwards."""
    made = store_factory()
    store = await made if inspect.isawaitable(made) else made
    try:
        await scenario(store)
    finally:
        await store.close()


async def check_store(store_factory: StoreFactory) -> None:
    """Every scenario of the contract, each on a new store; ``AssertionError`` if one fails."""
    for scenario in SCENARIOS:
        await run_scenario(store_factory, scenario)


if TYPE_CHECKING or HAS_PYTEST:

    class StoreContract:
        """The contract as pytest tests: subclass it and define the ``store_factory`` fixture."""

        @pytest.fixture
        def store_factory(self) -> StoreFactory:
            raise NotImplementedError(
                "define a store_factory fixture in the StoreContract subclass"
            )

        @pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda scenario: scenario.__name__)
        def test_store_keeps_the_contract(
            self, store_factory: StoreFactory, scenario: Scenario
        ) -> None:
            # An event loop of its own: the suite needs no async plugin.
            asyncio.run(run_scenario(store_factory, scenario))
