"""A user's sessions, listed and ended: what the session routes and the module's methods do."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from auth_refresh.exceptions import SessionNotFoundError
from auth_refresh.rotation import TokenRotationService
from auth_refresh.stores.base import SESSION_PAGE_MAX, SessionCursor, SessionRecord
from auth_refresh.stores.sealing import SESSION_ID_FORMAT

__all__ = ["SessionAdmin"]


class SessionAdmin:
    """The session operations of one refresh registration; ``rotation(operation)`` gives its
    rotation service, started (or raises for a registration without rotation)."""

    def __init__(self, rotation: Callable[[str], Awaitable[TokenRotationService]]) -> None:
        self._rotation = rotation

    async def revoke_family(self, family_id: str) -> None:
        """Refuse every refresh token of one token family from now on (one session)."""
        await (await self._rotation("revoke_family")).revoke_family(family_id)

    async def revoke_subject(self, subject: str) -> int:
        """Revoke every family of ``subject``: log out everywhere; how many live sessions it
        ended."""
        return await (await self._rotation("revoke_subject")).revoke_subject(subject)

    async def list_sessions(
        self, subject: str, *, limit: int = SESSION_PAGE_MAX, after: SessionCursor | None = None
    ) -> list[SessionRecord]:
        """At most ``limit`` live sessions (token families) of ``subject``, newest first; the
        next page is those after the last one's ``SessionCursor``."""
        if not 1 <= limit <= SESSION_PAGE_MAX:
            raise ValueError(f"limit must be 1 to {SESSION_PAGE_MAX}, not {limit}")
        rotation = await self._rotation("list_sessions")
        return await rotation.list_sessions(subject, limit=limit, after=after)

    async def page(
        self, subject: str, *, limit: int, after: SessionCursor | None = None
    ) -> tuple[list[SessionRecord], bool]:
        """``list_sessions``, and whether more follow (the store is asked for one more)."""
        rotation = await self._rotation("list_sessions")
        sessions = await rotation.list_sessions(subject, limit=limit + 1, after=after)
        return sessions[:limit], len(sessions) > limit

    async def revoke_session(self, subject: str, session_id: str) -> None:
        """End one live session of ``subject``; ``SessionNotFoundError`` (404) otherwise."""
        # A client's id: what is not a session id's form is not found, asking no store.
        if SESSION_ID_FORMAT.fullmatch(session_id) is None:
            raise SessionNotFoundError()
        rotation = await self._rotation("revoke_session")
        if not await rotation.revoke_session(subject, session_id):
            raise SessionNotFoundError()

    async def revoke_other_sessions(self, subject: str, keep: str | None) -> int:
        """End every live session of ``subject`` but ``keep`` (the caller's); how many."""
        return await (await self._rotation("revoke_other_sessions")).revoke_other_sessions(
            subject, keep
        )
