"""One token family in a store, driven with a clock the scenario controls."""

from __future__ import annotations

import secrets
import time

from auth_refresh.stores.base import (
    SESSION_PAGE_MAX,
    RefreshTokenStore,
    RotationOutcome,
    SessionRecord,
    SessionStart,
    Successor,
)
from auth_refresh.types import TokenPair

__all__ = ["GRACE", "IDLE", "LIFETIME", "MAX_SESSIONS", "Family", "listed", "new_id"]

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


async def listed(store: RefreshTokenStore, subject: str, *, now: float) -> list[SessionRecord]:
    """The first page of ``subject``'s sessions, as large as a page gets."""
    return await store.list_sessions(subject, now=now, limit=SESSION_PAGE_MAX)
