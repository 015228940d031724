"""memory:// holds no more than its live families, however often they rotate."""

from __future__ import annotations

import tracemalloc

import pytest

from auth_refresh import MemoryRefreshTokenStore, RotationOutcome
from store_fixtures import Family

pytestmark = pytest.mark.anyio

FAMILIES = 100


async def rotate_all(families: list[Family], tokens: list[str], times: int) -> None:
    for _ in range(times):
        for index, family in enumerate(families):
            family.now += 1
            outcome, _, successor = await family.rotate(tokens[index])
            assert outcome is RotationOutcome.ROTATED
            tokens[index] = successor.token_id


async def test_the_memory_store_does_not_grow_with_rotations() -> None:
    store = MemoryRefreshTokenStore()
    families = [await Family(store).start() for _ in range(FAMILIES)]
    tokens = [family.first_token for family in families]
    await rotate_all(families, tokens, 10)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        # Main's store kept an expiry entry per rotation for the token's lifetime: +30,000 here.
        await rotate_all(families, tokens, 300)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(
        stat.size_diff
        for stat in after.compare_to(before, "filename")
        if stat.traceback[0].filename.endswith("memory_store.py")
    )
    assert grown < 64 * 1024, f"the store grew by {grown} bytes"
    await store.close()


async def test_the_memory_store_forgets_expired_families_at_the_next_login() -> None:
    store = MemoryRefreshTokenStore()
    expired = [await Family(store).start(idle=60) for _ in range(FAMILIES)]
    tokens = [family.first_token for family in expired]
    await rotate_all(expired, tokens, 5)  # each now lives 600 s from its last rotation
    later = Family(store)
    later.now = expired[0].now + 700
    await later.start()
    # The expired families are gone: their tokens are unknown, not merely expired.
    for family, token in zip(expired, tokens, strict=True):
        family.now = later.now
        assert (await family.rotate(token))[0] is RotationOutcome.UNKNOWN
