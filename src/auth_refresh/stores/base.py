"""The refresh-token store: where token families live.

A login starts a *family*: its id travels in every refresh token of that login, and the store
keeps, per family, the one live token id, the token consumed last with the moment it was
consumed and its successor pair (for the grace window), and whether the family is revoked.
``rotate`` is the one atomic step of a refresh; every store implements the same decision,
``decide_rotation``, inside its own transaction (a lock, ``BEGIN IMMEDIATE``, a Lua script).

Each family is also a *session* the user can see and end: the store keeps its id (a one-way
digest of the family id, ``sealing.session_id_of``, carried by access tokens as
``sid``), when it started and was last refreshed, and a short client label.

Times are seconds since the epoch, passed in by the caller: the stores keep no clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

from auth_refresh.types import TokenPair

# The largest page of sessions (a store is asked for one more, to tell whether another page
# follows): with the cap on sessions per subject, no store step walks more than a page plus it.
SESSION_PAGE_MAX = 100

__all__ = [
    "SESSION_PAGE_MAX",
    "FamilyRecord",
    "ProofReplayCache",
    "RefreshTokenStore",
    "Rotation",
    "RotationOutcome",
    "SessionCursor",
    "SessionRecord",
    "SessionStart",
    "Successor",
    "decide_rotation",
    "new_family_record",
    "revoked_record",
]


class RotationOutcome(enum.Enum):
    """What the store made of a presented refresh token."""

    ROTATED = "rotated"  # it was the live token: consumed, its successor is live now
    GRACE = "grace"  # a repeat of the token just consumed, within the grace window
    REUSED = "reused"  # a consumed token came back: the family is revoked now
    REVOKED = "revoked"  # the family had been revoked
    EXPIRED = "expired"  # the family outlived its absolute lifetime or its live token
    UNKNOWN = "unknown"  # no such family (never stored, expired and purged, evicted)


@dataclass(frozen=True)
class Successor:
    """The pair a refresh hands out if it wins, signed before the store step.

    As a store sees it (``stores.sealing``): ``token_id`` is a digest and ``pair`` is
    sealed, opaque data to keep and give back within the grace window, never usable tokens.
    """

    token_id: str
    pair: TokenPair
    expires_at: float


@dataclass(frozen=True)
class Rotation:
    """The store's answer; ``pair`` is set for ``ROTATED`` and ``GRACE`` only."""

    outcome: RotationOutcome
    subject: str | None = None
    pair: TokenPair | None = None


@dataclass(frozen=True)
class SessionStart:
    """What ``start_family`` keeps about the session a family is: its id and client label.

    ``user_agent`` is at most 256 characters; ``client_ip`` is None unless a setting asks
    for it.
    """

    session_id: str
    user_agent: str | None = None
    client_ip: str | None = None


@dataclass(frozen=True)
class SessionRecord:
    """One live session, as ``list_sessions`` gives it: never a token."""

    session_id: str
    created_at: float
    last_refreshed_at: float
    user_agent: str | None = None
    client_ip: str | None = None


@dataclass(frozen=True)
class SessionCursor:
    """Where a page of ``list_sessions`` ends: the next page holds the sessions listed after
    this one (``created_at`` newest first, then ``session_id`` descending)."""

    created_at: float
    session_id: str

    @classmethod
    def of(cls, session: SessionRecord) -> SessionCursor:
        """The cursor of the page that ends with ``session``."""
        return cls(session.created_at, session.session_id)

    def is_before(self, created_at: float, session_id: str) -> bool:
        """Whether a session with this ``created_at`` and ``session_id`` is listed after it."""
        return (created_at, session_id) < (self.created_at, self.session_id)


@dataclass(frozen=True)
class FamilyRecord:
    """One family as the memory and SQLite stores keep it."""

    subject: str
    created_at: float
    expires_at: float
    live_token_id: str
    previous_token_id: str | None = None
    consumed_at: float | None = None
    successor_pair: TokenPair | None = None
    revoked: bool = False
    session_id: str = ""
    refreshed_at: float | None = None  # the last rotation; None: never refreshed
    user_agent: str | None = None
    client_ip: str | None = None

    @property
    def last_active(self) -> float:
        """Its last refresh, or its start: the least recent goes first beyond the cap."""
        return self.refreshed_at or self.created_at

    def is_live(self, now: float) -> bool:
        """Neither revoked nor expired at ``now``."""
        return not self.revoked and now < self.expires_at

    def session(self) -> SessionRecord:
        """The session this family is."""
        return SessionRecord(
            session_id=self.session_id,
            created_at=self.created_at,
            last_refreshed_at=self.last_active,
            user_agent=self.user_agent,
            client_ip=self.client_ip,
        )


class RefreshTokenStore(Protocol):
    """Keeps token families; every method is atomic, and raises ``StoreUnavailableError``
    when the backend cannot answer in time (never a guess)."""

    async def start_family(
        self,
        family_id: str,
        subject: str,
        token_id: str,
        *,
        token_expires_at: float,
        now: float,
        absolute_lifetime: float,
        session: SessionStart,
        max_sessions: int,
    ) -> None:
        """Record a new family whose live token is ``token_id``, and the session it is.

        In the same step, when ``subject`` has more than ``max_sessions`` live sessions, the
        least recently refreshed others are revoked until ``max_sessions`` remain; revoked and
        expired families leave the subject's index, so no index grows past the cap.
        """
        ...

    async def rotate(
        self,
        family_id: str,
        token_id: str,
        successor: Successor,
        *,
        now: float,
        grace_seconds: float,
        absolute_lifetime: float,
    ) -> Rotation:
        """Consume ``token_id`` of ``family_id`` and make ``successor`` live, as one step;
        a rotation makes ``now`` the session's ``last_refreshed_at``."""
        ...

    async def revoke_family(self, family_id: str) -> None:
        """Refuse every token of the family from now on."""
        ...

    async def revoke_subject(self, subject: str, *, now: float) -> int:
        """Revoke every family of ``subject``, as one step: log out everywhere; how many live
        sessions it ended."""
        ...

    async def session_active(self, session_id: str, *, now: float) -> bool:
        """Whether the family whose session is ``session_id`` exists, is not revoked (by any
        revoke method or by reuse) and has not expired at ``now``. Called by the access guard
        at most once per session per check interval and process."""
        ...

    async def list_sessions(
        self, subject: str, *, now: float, limit: int, after: SessionCursor | None = None
    ) -> list[SessionRecord]:
        """At most ``limit`` (``SESSION_PAGE_MAX`` and one more at most) live sessions (as
        ``session_active`` means it) of ``subject``, newest (``created_at``) first, then by
        ``session_id`` descending; only those listed after ``after`` when it is given."""
        ...

    async def revoke_session(self, subject: str, session_id: str, *, now: float) -> bool:
        """Revoke the family of ``session_id`` if it is a live session of ``subject``, as
        ``revoke_family`` does; False (and nothing changed) when it is not: unknown, ended,
        or another subject's."""
        ...

    async def revoke_other_sessions(self, subject: str, keep: str | None, *, now: float) -> int:
        """Revoke every live session of ``subject`` but ``keep``, as one step; how many."""
        ...

    async def close(self) -> None:
        """Release connections and threads; the store is not used afterwards."""
        ...


def new_family_record(
    subject: str,
    token_id: str,
    *,
    token_expires_at: float,
    now: float,
    absolute_lifetime: float,
    session: SessionStart,
) -> FamilyRecord:
    """The record ``start_family`` keeps, for a store that keeps ``FamilyRecord``s."""
    return FamilyRecord(
        subject=subject,
        created_at=now,
        expires_at=min(token_expires_at, now + absolute_lifetime),
        live_token_id=token_id,
        session_id=session.session_id,
        user_agent=session.user_agent,
        client_ip=session.client_ip,
    )


def decide_rotation(
    record: FamilyRecord | None,
    token_id: str,
    successor: Successor,
    *,
    now: float,
    grace_seconds: float,
    absolute_lifetime: float,
) -> tuple[Rotation, FamilyRecord | None]:
    """The answer to a presented token, and the family's new state (None: delete it).

    The Redis stores' rotation script (``redis_scripts.ROTATE``) is this function, line for line.
    """
    if record is None:
        return Rotation(RotationOutcome.UNKNOWN), None
    subject = record.subject
    deadline = record.created_at + absolute_lifetime
    if now >= deadline or now >= record.expires_at:
        return Rotation(RotationOutcome.EXPIRED, subject), None
    if record.revoked:
        return Rotation(RotationOutcome.REVOKED, subject), record
    if token_id == record.live_token_id:
        # Built field by field rather than with replace(): this is every refresh's path.
        rotated = FamilyRecord(
            subject=subject,
            created_at=record.created_at,
            expires_at=min(successor.expires_at, deadline),
            live_token_id=successor.token_id,
            previous_token_id=token_id,
            consumed_at=now,
            # Kept only for a grace window: without one there is no repeat to answer.
            successor_pair=successor.pair if grace_seconds > 0 else None,
            revoked=record.revoked,
            session_id=record.session_id,
            refreshed_at=now,
            user_agent=record.user_agent,
            client_ip=record.client_ip,
        )
        return Rotation(RotationOutcome.ROTATED, subject, successor.pair), rotated
    if (
        token_id == record.previous_token_id
        and record.consumed_at is not None
        and record.successor_pair is not None
        and now < record.consumed_at + grace_seconds
    ):
        return Rotation(RotationOutcome.GRACE, subject, record.successor_pair), record
    # A consumed token (or one older still) came back: someone else holds a copy.
    return Rotation(RotationOutcome.REUSED, subject), revoked_record(record)


def revoked_record(record: FamilyRecord) -> FamilyRecord:
    """``record`` revoked, its grace pair dropped."""
    # Revoked families stay as tombstones until they expire, so every token of them is refused.
    return replace(record, revoked=True, successor_pair=None)


@runtime_checkable
class ProofReplayCache(Protocol):
    """What a store implements to keep DPoP proofs single-use (RFC 9449 §11.1): keys seen, each
    until it expires. Optional: a registration with DPoP on needs a store that has it.

    Entries live only until their ``expires_at`` (the end of the proof's acceptance window), so
    the cache holds at most the proofs of one window; a store may refuse a key beyond a bound
    of its own with ``StoreUnavailableError`` (never forget one early).
    """

    async def first_use(self, key: str, *, expires_at: float, now: float) -> bool:
        """Record ``key`` until ``expires_at``, atomically; False if it is recorded already
        and not expired at ``now`` (a replay)."""
        ...
