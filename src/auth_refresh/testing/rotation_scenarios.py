"""The contract's scenarios of rotation: the live token, the grace window, reuse, lifetimes,
revocation, concurrent refreshes."""

from __future__ import annotations

import asyncio

from auth_refresh.stores.base import RefreshTokenStore, RotationOutcome
from auth_refresh.testing.family import GRACE, LIFETIME, Family, new_id


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
