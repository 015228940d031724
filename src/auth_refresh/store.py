"""The refresh-token store: where token families live, and which store a URL names.

A login starts a *family*: its id travels in every refresh token of that login, and the store
keeps, per family, the one live token id, the token consumed last with the moment it was
consumed and its successor pair (for the grace window), and whether the family is revoked.
``rotate`` is the one atomic step of a refresh; every store implements the same decision,
``decide_rotation``, inside its own transaction (a lock, ``BEGIN IMMEDIATE``, a Lua script).

Times are seconds since the epoch, passed in by the caller: the stores keep no clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Protocol

from auth_refresh.authentication import TokenPair
from auth_refresh.exceptions import ConfigurationError

__all__ = [
    "FamilyRecord",
    "RefreshTokenStore",
    "Rotation",
    "RotationOutcome",
    "Successor",
    "decide_rotation",
    "open_store",
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
    """The pair a refresh hands out if it wins, signed before the store step."""

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
    ) -> None:
        """Record a new family whose live token is ``token_id``."""
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
        """Consume ``token_id`` of ``family_id`` and make ``successor`` live, as one step."""
        ...

    async def revoke_family(self, family_id: str) -> None:
        """Refuse every token of the family from now on."""
        ...

    async def revoke_subject(self, subject: str) -> None:
        """Revoke every family of ``subject``: log out everywhere."""
        ...

    async def close(self) -> None:
        """Release connections and threads; the store is not used afterwards."""
        ...


def new_family_record(
    subject: str, token_id: str, *, token_expires_at: float, now: float, absolute_lifetime: float
) -> FamilyRecord:
    return FamilyRecord(
        subject=subject,
        created_at=now,
        expires_at=min(token_expires_at, now + absolute_lifetime),
        live_token_id=token_id,
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

    The Redis store's Lua script is this function, line for line.
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
    # Revoked families stay as tombstones until they expire, so every token of them is refused.
    return replace(record, revoked=True, successor_pair=None)


def open_store(url: str) -> RefreshTokenStore:
    """The store ``url`` names: ``memory://``, ``sqlite:///path/to/file.db``,
    ``redis://host:port/db`` (``rediss://`` with TLS), ``postgresql://user:pass@host:port/db``
    or ``redis-cluster://host:port`` (``rediss-cluster://`` with TLS)."""
    if url == "memory://":
        from auth_refresh.memory_store import MemoryRefreshTokenStore

        return MemoryRefreshTokenStore()
    if url.startswith("sqlite:///"):
        from auth_refresh.sqlite_store import SqliteRefreshTokenStore

        return SqliteRefreshTokenStore.from_url(url)
    if url.startswith(("redis://", "rediss://")):
        try:
            from auth_refresh.redis_store import RedisRefreshTokenStore
        except ImportError:
            raise ConfigurationError(
                "AUTH_REFRESH_STORE_URL names Redis: install the extra 'auth-refresh[redis]'"
            ) from None
        return RedisRefreshTokenStore.from_url(url)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from auth_refresh.postgres_store import PostgresRefreshTokenStore
        except ImportError:
            raise ConfigurationError(
                "AUTH_REFRESH_STORE_URL names PostgreSQL: install 'auth-refresh[postgres]'"
            ) from None
        return PostgresRefreshTokenStore.from_url(url)
    if url.startswith(("redis-cluster://", "rediss-cluster://")):
        try:
            from auth_refresh.redis_cluster_store import RedisClusterRefreshTokenStore
        except ImportError:
            raise ConfigurationError(
                "AUTH_REFRESH_STORE_URL names Redis Cluster: install 'auth-refresh[redis]'"
            ) from None
        return RedisClusterRefreshTokenStore.from_url(url)
    raise ConfigurationError(
        "AUTH_REFRESH_STORE_URL must be memory://, sqlite:///path/to/file.db, "
        "redis://host:port/db (rediss:// with TLS), postgresql://user:pass@host:port/db or "
        "redis-cluster://host:port (rediss-cluster:// with TLS)"
    )
