"""The store contract, once for every store: memory, SQLite (a file), and Redis, PostgreSQL and
Redis Cluster (real servers)."""

from __future__ import annotations

import pytest

from auth_refresh import ConfigurationError, RotationOutcome, open_store
from store_fixtures import GRACE, LIFETIME, Family, new_id, opened

pytestmark = pytest.mark.anyio


async def test_the_live_token_rotates_once(store_url: str) -> None:
    async with opened(store_url) as store:
        family = await Family(store).start()
        outcome, pair, offered = await family.rotate(family.first_token)
        assert outcome is RotationOutcome.ROTATED
        assert pair == offered.pair
        outcome, pair, following = await family.rotate(offered.token_id)
        assert outcome is RotationOutcome.ROTATED
        assert pair == following.pair


async def test_a_repeat_within_the_grace_window_gets_the_same_successor(store_url: str) -> None:
    async with opened(store_url) as store:
        family = await Family(store).start()
        _, first, _ = await family.rotate(family.first_token)
        family.now += GRACE - 0.5
        outcome, again, _ = await family.rotate(family.first_token)
        assert outcome is RotationOutcome.GRACE
        assert again == first


async def test_a_repeat_after_the_grace_window_revokes_the_family(store_url: str) -> None:
    async with opened(store_url) as store:
        family = await Family(store).start()
        _, _, live = await family.rotate(family.first_token)
        family.now += GRACE
        outcome, pair, _ = await family.rotate(family.first_token)
        assert (outcome, pair) == (RotationOutcome.REUSED, None)
        # The newest token goes with the family.
        outcome, pair, _ = await family.rotate(live.token_id)
        assert (outcome, pair) == (RotationOutcome.REVOKED, None)


async def test_without_a_grace_window_any_repeat_is_reuse(store_url: str) -> None:
    async with opened(store_url) as store:
        family = await Family(store).start()
        outcome, _, live = await family.rotate(family.first_token, grace=0)
        assert outcome is RotationOutcome.ROTATED
        outcome, _, _ = await family.rotate(family.first_token, grace=0)
        assert outcome is RotationOutcome.REUSED
        outcome, _, _ = await family.rotate(live.token_id, grace=0)
        assert outcome is RotationOutcome.REVOKED


async def test_a_token_older_than_the_last_one_is_reuse_even_within_the_window(
    store_url: str,
) -> None:
    async with opened(store_url) as store:
        family = await Family(store).start()
        _, _, second = await family.rotate(family.first_token)
        _, _, third = await family.rotate(second.token_id)
        outcome, _, _ = await family.rotate(family.first_token)
        assert outcome is RotationOutcome.REUSED
        outcome, _, _ = await family.rotate(third.token_id)
        assert outcome is RotationOutcome.REVOKED


async def test_an_unknown_family_is_unknown_and_an_unknown_token_of_a_family_is_reuse(
    store_url: str,
) -> None:
    async with opened(store_url) as store:
        family = Family(store)
        outcome, pair, _ = await family.rotate(family.first_token)
        assert (outcome, pair) == (RotationOutcome.UNKNOWN, None)
        await family.start()
        outcome, _, _ = await family.rotate(new_id())
        assert outcome is RotationOutcome.REUSED


async def test_the_absolute_lifetime_caps_a_family_however_often_it_rotates(
    store_url: str,
) -> None:
    async with opened(store_url) as store:
        family = await Family(store).start()
        started, token = family.now, family.first_token
        # Rotating every 500 s keeps within the 600 s idle limit, but not past the 3600 s cap:
        # the last successor (at 3500 s) would idle out at 4100 s.
        for step in range(8):
            family.now = started + 500 * step
            outcome, _, live = await family.rotate(token)
            assert outcome is RotationOutcome.ROTATED
            token = live.token_id
        family.now = started + LIFETIME
        outcome, _, _ = await family.rotate(token)
        assert outcome is RotationOutcome.EXPIRED
        outcome, _, _ = await family.rotate(token)
        assert outcome is RotationOutcome.UNKNOWN


async def test_the_live_tokens_expiry_is_the_idle_limit(store_url: str) -> None:
    async with opened(store_url) as store:
        family = await Family(store).start(idle=60)
        _, _, live = await family.rotate(family.first_token, idle=60)
        family.now += 60
        outcome, _, _ = await family.rotate(live.token_id)
        assert outcome is RotationOutcome.EXPIRED


async def test_revoke_family_refuses_that_family_only(store_url: str) -> None:
    async with opened(store_url) as store:
        revoked = await Family(store).start()
        other = await Family(store, revoked.subject).start()
        await store.revoke_family(revoked.id)
        outcome, pair, _ = await revoked.rotate(revoked.first_token)
        assert (outcome, pair) == (RotationOutcome.REVOKED, None)
        outcome, _, _ = await other.rotate(other.first_token)
        assert outcome is RotationOutcome.ROTATED
        # Revoking what is not there is no error.
        await store.revoke_family(new_id())


async def test_revoke_family_drops_the_grace_pair(store_url: str) -> None:
    async with opened(store_url) as store:
        family = await Family(store).start()
        await family.rotate(family.first_token)
        await store.revoke_family(family.id)
        outcome, pair, _ = await family.rotate(family.first_token)
        assert (outcome, pair) == (RotationOutcome.REVOKED, None)


async def test_revoke_subject_logs_out_everywhere_and_later_logins_work(store_url: str) -> None:
    async with opened(store_url) as store:
        phone = await Family(store).start()
        laptop = await Family(store, phone.subject).start()
        _, _, laptop_live = await laptop.rotate(laptop.first_token)
        bystander = await Family(store).start()
        await store.revoke_subject(phone.subject)
        assert (await phone.rotate(phone.first_token))[0] is RotationOutcome.REVOKED
        assert (await laptop.rotate(laptop_live.token_id))[0] is RotationOutcome.REVOKED
        assert (await bystander.rotate(bystander.first_token))[0] is RotationOutcome.ROTATED
        later = await Family(store, phone.subject).start()
        assert (await later.rotate(later.first_token))[0] is RotationOutcome.ROTATED
        await store.revoke_subject("nobody-" + new_id())


@pytest.mark.parametrize(
    "store_url", ["sqlite", "redis", "postgres", "redis-cluster"], indirect=True
)
async def test_a_second_store_on_the_same_url_sees_the_same_families(store_url: str) -> None:
    async with opened(store_url) as first, opened(store_url) as second:
        family = await Family(first).start()
        _, _, live = await family.rotate(family.first_token)
        family.store = second
        assert (await family.rotate(family.first_token))[0] is RotationOutcome.GRACE
        assert (await family.rotate(live.token_id))[0] is RotationOutcome.ROTATED


@pytest.mark.parametrize(
    "url",
    ["mysql://localhost/db", "sqlite://relative.db", "sqlite:///", "sqlite:///:memory:"],
)
def test_unsupported_store_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        open_store(url)


def test_a_sqlite_file_in_a_missing_directory_is_a_configuration_error(tmp_path: object) -> None:
    with pytest.raises(ConfigurationError, match="directory does not exist"):
        open_store(f"sqlite:///{tmp_path}/missing/families.db")
