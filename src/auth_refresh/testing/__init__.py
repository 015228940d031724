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

``PROOF_SCENARIOS`` are the DPoP replay cache's (``ProofReplayCache.first_use``), run for a
store that has one: for any other, ``StoreContract`` skips them and ``check_store`` passes them
by, so a store without DPoP keeps the contract.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeAlias

from auth_refresh._utils import resolve
from auth_refresh.stores.base import ProofReplayCache, RefreshTokenStore
from auth_refresh.testing import proof_scenarios as proofs
from auth_refresh.testing import rotation_scenarios as rotation
from auth_refresh.testing import session_scenarios as sessions
from auth_refresh.testing.family import (
    GRACE,
    IDLE,
    LIFETIME,
    MAX_SESSIONS,
    Family,
    listed,
    new_id,
)

try:
    import pytest
except ImportError:  # check_store() needs no pytest; only StoreContract does
    HAS_PYTEST = False
else:
    HAS_PYTEST = True

__all__ = [
    "GRACE",
    "IDLE",
    "LIFETIME",
    "MAX_SESSIONS",
    "PROOF_SCENARIOS",
    "SCENARIOS",
    "Family",
    "StoreContract",
    "StoreFactory",
    "check_store",
    "listed",
    "new_id",
]

StoreFactory: TypeAlias = Callable[[], RefreshTokenStore | Awaitable[RefreshTokenStore]]
Scenario: TypeAlias = Callable[[RefreshTokenStore], Awaitable[None]]
ProofScenario: TypeAlias = Callable[[ProofReplayCache], Awaitable[None]]

SCENARIOS: tuple[Scenario, ...] = (
    rotation.the_live_token_rotates_once,
    rotation.a_repeat_within_the_grace_window_gets_the_same_successor,
    rotation.a_repeat_after_the_grace_window_revokes_the_family,
    rotation.without_a_grace_window_any_repeat_is_reuse,
    rotation.a_token_older_than_the_last_one_is_reuse_even_within_the_window,
    rotation.an_unknown_family_is_unknown_and_an_unknown_token_of_a_family_is_reuse,
    rotation.the_absolute_lifetime_caps_a_family_however_often_it_rotates,
    rotation.the_live_tokens_expiry_is_the_idle_limit,
    rotation.revoke_family_refuses_that_family_only,
    rotation.revoke_subject_logs_out_everywhere_and_later_logins_work,
    rotation.concurrent_refreshes_of_one_token_rotate_it_once,
    sessions.sessions_are_listed_newest_first_with_their_labels,
    sessions.a_rotation_is_the_sessions_last_refresh,
    sessions.a_session_ends_with_every_revocation_and_with_expiry,
    sessions.revoke_session_ends_one_live_session_of_its_subject_only,
    sessions.a_login_beyond_the_cap_ends_the_least_recently_refreshed_session,
    sessions.sessions_are_paged_in_list_order_each_once,
    sessions.revoke_other_sessions_keeps_one_and_counts_the_rest,
)

PROOF_SCENARIOS: tuple[ProofScenario, ...] = (
    proofs.a_proof_is_accepted_once_within_its_window,
    proofs.racing_uses_of_one_proof_accept_one,
    proofs.a_proofs_key_is_free_again_once_its_window_is_over,
)


async def run_scenario(store_factory: StoreFactory, scenario: Scenario) -> None:
    """``scenario`` on a new store from ``store_factory``, closed afterwards."""
    store = await resolve(store_factory())
    try:
        await scenario(store)
    finally:
        await store.close()


async def run_proof_scenario(store_factory: StoreFactory, scenario: ProofScenario) -> bool:
    """``scenario`` on a new store from ``store_factory``, closed afterwards; False, and not
    run, if the store keeps no DPoP proofs."""
    store = await resolve(store_factory())
    try:
        if not isinstance(store, ProofReplayCache):
            return False
        await scenario(store)
        return True
    finally:
        await store.close()


async def check_store(store_factory: StoreFactory) -> None:
    """Every scenario of the contract, each on a new store; ``AssertionError`` if one fails.
    The proof scenarios too, if the store keeps DPoP proofs."""
    for scenario in SCENARIOS:
        await run_scenario(store_factory, scenario)
    for proof_scenario in PROOF_SCENARIOS:
        if not await run_proof_scenario(store_factory, proof_scenario):
            break


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

        @pytest.mark.parametrize(
            "proof_scenario", PROOF_SCENARIOS, ids=lambda scenario: scenario.__name__
        )
        def test_store_keeps_the_proof_contract(
            self, store_factory: StoreFactory, proof_scenario: ProofScenario
        ) -> None:
            if not asyncio.run(run_proof_scenario(store_factory, proof_scenario)):
                pytest.skip("the store keeps no DPoP proofs (ProofReplayCache); DPoP needs one")
