"""The DPoP replay cache (``ProofReplayCache.first_use``) on every store: a proof's key is
accepted once within its window, by every worker sharing the store, and again once expired."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from auth_refresh.exceptions import StoreUnavailableError
from auth_refresh.stores import memory
from auth_refresh.stores.base import ProofReplayCache
from store_fixtures import opened

pytestmark = pytest.mark.anyio

# Redis expires keys by its own clock: the tests wait this long, for real.
SHORT_WINDOW = 0.3


async def test_a_proof_is_used_once_within_its_window_on_every_store(store_url: str) -> None:
    async with opened(store_url) as store:
        assert isinstance(store, ProofReplayCache)
        key, other = uuid.uuid4().hex, uuid.uuid4().hex
        now = time.time()
        assert await store.first_use(key, expires_at=now + SHORT_WINDOW, now=now)
        assert not await store.first_use(key, expires_at=now + SHORT_WINDOW, now=now + 0.1)
        assert await store.first_use(other, expires_at=now + 60, now=now)
        # Ten requests replaying one proof at once: one wins.
        racing = uuid.uuid4().hex
        answers = await asyncio.gather(
            *(store.first_use(racing, expires_at=now + 60, now=now) for _ in range(10))
        )
        assert sorted(answers) == [False] * 9 + [True]
        await asyncio.sleep(SHORT_WINDOW + 0.2)
        later = time.time()
        # Once its window is over, the key is free (and kept for the new window).
        assert await store.first_use(key, expires_at=later + 60, now=later)
        assert not await store.first_use(key, expires_at=later + 60, now=later)
        assert not await store.first_use(other, expires_at=later + 60, now=later)


async def test_every_worker_sharing_the_store_sees_the_proofs(store_url: str) -> None:
    if store_url == "memory://":
        pytest.skip("a memory store is one process's")
    async with opened(store_url) as one, opened(store_url) as another:
        assert isinstance(one, ProofReplayCache)
        assert isinstance(another, ProofReplayCache)
        key, now = uuid.uuid4().hex, time.time()
        assert await one.first_use(key, expires_at=now + 60, now=now)
        assert not await another.first_use(key, expires_at=now + 60, now=now)


async def test_the_memory_cache_is_bounded_and_refuses_rather_than_forgets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(memory, "MAX_PROOF_KEYS", 3)
    store = memory.MemoryRefreshTokenStore()
    now = time.time()
    for index in range(3):
        assert await store.first_use(f"key-{index}", expires_at=now + 10, now=now)
    with pytest.raises(StoreUnavailableError):
        await store.first_use("key-3", expires_at=now + 10, now=now)
    # Nothing was forgotten to make room, and expired keys leave.
    assert not await store.first_use("key-0", expires_at=now + 10, now=now)
    assert await store.first_use("key-3", expires_at=now + 30, now=now + 10)
