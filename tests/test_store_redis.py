"""Redis in real deployments: an evicting maxmemory-policy is refused, the per-subject index
forgets expired families, revoke_subject holds Redis for no time however many families there
are, and concurrent steps share round trips."""

from __future__ import annotations

import asyncio
import gc
import warnings
from pathlib import Path

import pytest
import redis

from auth_refresh import ConfigurationError, RotationOutcome, StoreUnavailableError
from auth_refresh.stores.redis import RedisRefreshTokenStore
from store_fixtures import Family, opened, running_redis

# Most tests here start a server of their own: make quick leaves them out.
pytestmark = [pytest.mark.anyio, pytest.mark.servers]


@pytest.mark.parametrize("policy", ["volatile-lru", "allkeys-lru", "volatile-ttl"])
async def test_an_evicting_maxmemory_policy_is_refused_naming_noeviction(
    tmp_path: Path, policy: str
) -> None:
    with running_redis(tmp_path, options=("--maxmemory-policy", policy)) as server:
        async with opened(server.url) as store:
            with pytest.raises(ConfigurationError, match=f"noeviction.*{policy}"):
                await Family(store).start()


async def test_a_redis_without_config_get_is_used_as_it_is(tmp_path: Path) -> None:
    # Managed services often disable CONFIG: their operator answers for the policy.
    with running_redis(tmp_path, options=("--rename-command", "CONFIG", "")) as server:
        async with opened(server.url) as store:
            family = await Family(store).start()
            assert (await family.rotate(family.first_token))[0] is RotationOutcome.ROTATED


async def test_the_subject_index_forgets_expired_families_as_it_goes(redis_url: str) -> None:
    async with opened(redis_url) as store:
        expired = [await Family(store, "index-subject").start(idle=60) for _ in range(300)]
        kept = await Family(store, "index-subject").start(idle=60)
        kept.now += 50
        await kept.rotate(kept.first_token, idle=600)  # now lives to +650 s
        later = Family(store, "index-subject")
        later.now = expired[0].now + 61
        await later.start()
        with redis.Redis.from_url(redis_url, decode_responses=True) as client:
            index = client.zrange("auth-refresh:families:index-subject", 0, -1)
            client.delete("auth-refresh:families:index-subject")
    assert sorted(index) == sorted([kept.id, later.id])


async def test_revoke_subject_is_one_short_step_however_many_families(tmp_path: Path) -> None:
    with running_redis(tmp_path) as server:
        async with opened(server.url) as store:
            families = [Family(store, "busy-subject") for _ in range(20_000)]
            # In small batches: a loaded machine must not time out the setup's own steps.
            for start in range(0, len(families), 100):
                await asyncio.gather(*(f.start() for f in families[start : start + 100]))
            with redis.Redis.from_url(server.url, decode_responses=True) as client:
                client.config_resetstat()
                await store.revoke_subject("busy-subject")
                stats = client.info("commandstats")
            sample = families[:: len(families) // 50]
            outcomes = await asyncio.gather(*(f.rotate(f.first_token) for f in sample))
    # What the server ran for the revoke, the script's own commands included: a handful,
    # not one per family (main's script touched all 20,000 in one go, holding Redis ~2 s per
    # million), so no step holds Redis longer than a few microseconds.
    calls = {
        name.removeprefix("cmdstat_"): value["calls"]
        for name, value in stats.items()
        if name not in {"cmdstat_config|resetstat", "cmdstat_info"}
    }
    assert sum(calls.values()) <= 8, calls
    assert {outcome for outcome, _, _ in outcomes} == {RotationOutcome.REVOKED}


async def test_a_login_racing_revoke_subject_is_revoked_or_started_after_it(
    redis_url: str,
) -> None:
    async with opened(redis_url) as store:
        families = [Family(store, "racing-subject") for _ in range(200)]
        await asyncio.gather(
            *(f.start() for f in families[:100]),
            store.revoke_subject("racing-subject"),
            *(f.start() for f in families[100:]),
        )
        with redis.Redis.from_url(redis_url, decode_responses=True) as client:
            # The generation each login read: 0 before the revoke, 1 after it.
            read = [client.hget(f"auth-refresh:family:{f.id}", "gen") for f in families]
        outcomes = await asyncio.gather(*(f.rotate(f.first_token) for f in families))
    expected = {"0": RotationOutcome.REVOKED, "1": RotationOutcome.ROTATED}
    assert [outcome for outcome, _, _ in outcomes] == [expected[str(gen)] for gen in read]
    assert "0" in read  # the revoke did not simply come first


async def test_concurrent_steps_share_round_trips(tmp_path: Path) -> None:
    with running_redis(tmp_path) as server:
        async with opened(server.url) as store:
            assert isinstance(store, RedisRefreshTokenStore)
            families = [await Family(store).start() for _ in range(64)]
            with redis.Redis.from_url(server.url) as client:
                before = client.info("stats")
                outcomes = await asyncio.gather(*(f.rotate(f.first_token) for f in families))
                after = client.info("stats")
    assert {outcome for outcome, _, _ in outcomes} == {RotationOutcome.ROTATED}
    # The INFO call itself is one read.
    reads = after["total_reads_processed"] - before["total_reads_processed"] - 1
    commands = after["total_commands_processed"] - before["total_commands_processed"] - 1
    assert commands >= 64
    assert 1 <= reads < 64 // 4


async def test_closing_while_a_pipeline_is_under_way_leaves_no_socket_open(
    tmp_path: Path,
) -> None:
    with running_redis(tmp_path) as server:
        store = RedisRefreshTokenStore.from_url(server.url)
        family = Family(store)
        await family.start()
        server.pause()
        try:
            step = asyncio.ensure_future(family.rotate(family.first_token))
            await asyncio.sleep(0.1)  # its pipeline is written and waits for the reply
            await store.close()
        finally:
            server.resume()
        with pytest.raises(StoreUnavailableError):
            await step
        await asyncio.sleep(0.5)  # what a pipeline left running would do meanwhile
    # An unclosed socket is a ResourceWarning when collected: an error under this suite.
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        gc.collect()
