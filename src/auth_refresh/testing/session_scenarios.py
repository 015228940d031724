"""The contract's scenarios of sessions: listed with their labels, paged, capped, ended by
every revocation and by expiry, revoked by their owner only."""

from __future__ import annotations

import time

from auth_refresh.stores.base import RefreshTokenStore, RotationOutcome, SessionCursor
from auth_refresh.testing.family import GRACE, Family, listed, new_id


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
