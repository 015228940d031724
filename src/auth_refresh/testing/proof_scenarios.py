"""The contract's scenarios of the DPoP replay cache (``ProofReplayCache.first_use``): a proof's
key is accepted once within its window, by one of any number of racing requests, and again once
the window is over. Only for a store that keeps proofs: DPoP needs one, no other feature does.

The clock is the real one: a store may expire keys by its server's clock (Redis does).
"""

from __future__ import annotations

import asyncio
import time

from auth_refresh.stores.base import ProofReplayCache
from auth_refresh.testing.family import new_id

__all__ = [
    "a_proof_is_accepted_once_within_its_window",
    "a_proofs_key_is_free_again_once_its_window_is_over",
    "racing_uses_of_one_proof_accept_one",
]

# Short, so the scenario waits for its end for real.
SHORT_WINDOW = 0.2
RACERS = 10


async def a_proof_is_accepted_once_within_its_window(store: ProofReplayCache) -> None:
    key, other, now = "proof-" + new_id(), "proof-" + new_id(), time.time()
    assert await store.first_use(key, expires_at=now + 60, now=now)
    assert not await store.first_use(key, expires_at=now + 60, now=now + 1), "a replay"
    assert not await store.first_use(key, expires_at=now + 61, now=now + 59), "a replay"
    assert await store.first_use(other, expires_at=now + 60, now=now), "another proof"


async def racing_uses_of_one_proof_accept_one(store: ProofReplayCache) -> None:
    key, now = "proof-" + new_id(), time.time()
    answers = await asyncio.gather(
        *(store.first_use(key, expires_at=now + 60, now=now) for _ in range(RACERS))
    )
    assert sorted(answers) == [False] * (RACERS - 1) + [True]


async def a_proofs_key_is_free_again_once_its_window_is_over(store: ProofReplayCache) -> None:
    key, now = "proof-" + new_id(), time.time()
    assert await store.first_use(key, expires_at=now + SHORT_WINDOW, now=now)
    await asyncio.sleep(SHORT_WINDOW * 2)
    later = time.time()
    # Kept again, for the new window: a cache that forgets too soon lets replays through.
    assert await store.first_use(key, expires_at=later + 60, now=later)
    assert not await store.first_use(key, expires_at=later + 60, now=later)
