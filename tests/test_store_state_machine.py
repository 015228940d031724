"""A Hypothesis state machine over each store, with a clock the machine moves: logins,
refreshes, replays of any earlier token, logouts, log-out-everywhere and the passing of time.

It checks the issue's invariants directly (at most one live token per family, a revoked family
stays revoked, a replay outside the grace window always revokes) and every outcome against a
model written from the issue's semantics.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from auth_refresh import RotationOutcome, SessionStart, Successor, TokenPair, open_store
from auth_refresh.stores.sealing import session_id_of

T = TypeVar("T")

GRACE = 5.0
IDLE = 600.0
LIFETIME = 3600.0
# More than a run logs in: the cap is the contract's business, not the model's.
MAX_SESSIONS = 1000
SUBJECTS = ["alice", "bob"]
# Above any run's logins: the cap (contract-tested) never ends a session here.
MAX_SESSIONS = 1000
# Steps that land on either side of the grace window and the idle limit, and past the cap.
STEPS = [0.0, 1.0, 4.999, 5.0, 599.0, 601.0, 3600.0]
GONE = {RotationOutcome.EXPIRED, RotationOutcome.UNKNOWN}
# The invariants are under test here, not the deadlines (tests/test_store_faults.py has those):
# on a loaded machine a step may take this long without failing the run.
PATIENT_SECONDS = 30.0


@dataclass
class ModelFamily:
    subject: str
    created_at: float
    expires_at: float
    live: str
    previous: str | None = None
    consumed_at: float | None = None
    successor_pair: TokenPair | None = None
    revoked: bool = False
    gone: bool = False
    issued: set[str] = field(default_factory=set)

    def expired(self, now: float) -> bool:
        return now >= self.created_at + LIFETIME or now >= self.expires_at


@dataclass(frozen=True)
class Token:
    family_id: str
    token_id: str


def new_id() -> str:
    return secrets.token_urlsafe(16)


def patient(store_url: str) -> str:
    """``store_url`` with socket timeouts of ``PATIENT_SECONDS`` where the store takes them."""
    if not store_url.startswith(("redis://", "redis-cluster://")):
        return store_url
    separator = "&" if "?" in store_url else "?"
    timeouts = f"socket_timeout={PATIENT_SECONDS}&socket_connect_timeout={PATIENT_SECONDS}"
    return store_url + separator + timeouts


def machine_for(store_url: str) -> type[RuleBasedStateMachine]:
    class StoreMachine(RuleBasedStateMachine):
        tokens = Bundle("tokens")

        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.store = open_store(patient(store_url))
            if hasattr(self.store, "step_deadline"):
                self.store.step_deadline = PATIENT_SECONDS
            self.now = time.time()
            self.families: dict[str, ModelFamily] = {}
            # The subjects of this run only: a server outlives runs, and revoke_subject counts.
            self.run_id = new_id()

        def run(self, step: Coroutine[Any, Any, T]) -> T:
            return self.loop.run_until_complete(step)

        def teardown(self) -> None:
            self.run(self.store.close())
            self.loop.close()

        @rule(target=tokens, subject=st.sampled_from(SUBJECTS))
        def log_in(self, subject: str) -> Token:
            subject += "-" + self.run_id
            family_id, token_id = new_id(), new_id()
            self.run(
                self.store.start_family(
                    family_id,
                    subject,
                    token_id,
                    token_expires_at=self.now + IDLE,
                    now=self.now,
                    absolute_lifetime=LIFETIME,
                    session=SessionStart(session_id_of(family_id)),
                    max_sessions=MAX_SESSIONS,
                )
            )
            self.families[family_id] = ModelFamily(
                subject, self.now, min(self.now + IDLE, self.now + LIFETIME), token_id
            )
            self.families[family_id].issued.add(token_id)
            return Token(family_id, token_id)

        @rule(target=tokens, token=tokens)
        def refresh(self, token: Token) -> Any:
            """Present any token ever issued: the live one, one just consumed, an old one."""
            family = self.families[token.family_id]
            offered_id = new_id()
            offered = Successor(
                token_id=offered_id,
                pair={"accessToken": "a-" + offered_id, "refreshToken": "r-" + offered_id},
                expires_at=self.now + IDLE,
            )
            rotation = self.run(
                self.store.rotate(
                    token.family_id,
                    token.token_id,
                    offered,
                    now=self.now,
                    grace_seconds=GRACE,
                    absolute_lifetime=LIFETIME,
                )
            )
            outcome = rotation.outcome
            if family.gone or family.expired(self.now):
                assert outcome in GONE, outcome
                family.gone = True
                return multiple()
            if family.revoked:
                # A revoked family stays revoked.
                assert outcome is RotationOutcome.REVOKED, outcome
                assert rotation.pair is None
                return multiple()
            if token.token_id == family.live:
                assert outcome is RotationOutcome.ROTATED, outcome
                assert rotation.pair == offered.pair
                family.previous, family.consumed_at = family.live, self.now
                family.live, family.successor_pair = offered_id, offered.pair
                family.expires_at = min(self.now + IDLE, family.created_at + LIFETIME)
                family.issued.add(offered_id)
                return Token(token.family_id, offered_id)
            # At most one live token: any other token of the family is never rotated.
            assert outcome is not RotationOutcome.ROTATED
            within_grace = (
                token.token_id == family.previous
                and family.consumed_at is not None
                and self.now < family.consumed_at + GRACE
            )
            if within_grace:
                assert outcome is RotationOutcome.GRACE, outcome
                assert rotation.pair == family.successor_pair
            else:
                # A replay outside the grace window always revokes.
                assert outcome is RotationOutcome.REUSED, outcome
                assert rotation.pair is None
                family.revoked = True
            return multiple()

        @precondition(lambda self: any(family.previous for family in self.families.values()))
        @rule(target=tokens, data=st.data())
        def replay_the_token_just_consumed(self, data: st.DataObject) -> Any:
            """The two-tabs case, and the thief's: the token the last refresh consumed."""
            family_id = data.draw(
                st.sampled_from(sorted(key for key, f in self.families.items() if f.previous))
            )
            previous = self.families[family_id].previous
            assert previous is not None
            return self.refresh(Token(family_id, previous))

        @rule(token=tokens)
        def log_out(self, token: Token) -> None:
            self.run(self.store.revoke_family(token.family_id))
            self.families[token.family_id].revoked = True

        @rule(subject=st.sampled_from(SUBJECTS))
        def log_out_everywhere(self, subject: str) -> None:
            subject += "-" + self.run_id
            ended = self.run(self.store.revoke_subject(subject, now=self.now))
            live = 0
            for family in self.families.values():
                if family.subject == subject:
                    live += not (family.revoked or family.gone or family.expired(self.now))
                    family.revoked = True
            assert ended == live

        @rule(seconds=st.sampled_from(STEPS))
        def advance_time(self, seconds: float) -> None:
            self.now += seconds

    return StoreMachine


def run_machine(store_url: str, examples: int) -> None:
    run_state_machine_as_test(
        machine_for(store_url),
        settings=settings(
            max_examples=examples,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def test_the_store_keeps_the_rotation_invariants(store_url: str) -> None:
    run_machine(store_url, examples=200 if store_url == "memory://" else 80)
