"""``memory://``: token families in a dict, for one process and for tests."""

from __future__ import annotations

import heapq
import threading

from auth_refresh.exceptions import StoreUnavailableError
from auth_refresh.stores.base import (
    FamilyRecord,
    Rotation,
    SessionCursor,
    SessionRecord,
    SessionStart,
    Successor,
    decide_rotation,
    new_family_record,
    revoked_record,
)

__all__ = ["MemoryRefreshTokenStore"]

# The most DPoP proofs remembered at once; beyond, new proofs are refused (503) until some expire.
MAX_PROOF_KEYS = 100_000


class MemoryRefreshTokenStore:
    """Families in memory; one lock makes each step atomic across threads and event loops."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: dict[str, FamilyRecord] = {}
        self._by_subject: dict[str, set[str]] = {}
        self._by_session: dict[str, str] = {}
        # One (expires_at, family_id) entry per family, pushed at its start: an entry that comes
        # due for a family that lives longer now is pushed again with its new expiry, so the
        # heap stays as large as the families, however often they rotate.
        self._expiries: list[tuple[float, str]] = []
        # DPoP proofs seen (ProofReplayCache): key -> expiry, and a heap of (expiry, key).
        self._proofs: dict[str, float] = {}
        self._proof_expiries: list[tuple[float, str]] = []

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
        record = new_family_record(
            subject,
            token_id,
            token_expires_at=token_expires_at,
            now=now,
            absolute_lifetime=absolute_lifetime,
            session=session,
        )
        with self._lock:
            self._purge(now)
            if family_id not in self._families:
                heapq.heappush(self._expiries, (record.expires_at, family_id))
            self._put(family_id, record)
            others = [other for other in self._live_families(subject, now) if other != family_id]
            # The least recently refreshed go first; the new session always stays.
            others.sort(key=lambda other: self._families[other].last_active)
            for other in others[: max(0, len(others) + 1 - max_sessions)]:
                self._revoke(other)

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
        with self._lock:
            rotation, record = decide_rotation(
                self._families.get(family_id),
                token_id,
                successor,
                now=now,
                grace_seconds=grace_seconds,
                absolute_lifetime=absolute_lifetime,
            )
            if record is None:
                self._delete(family_id)
            else:
                self._put(family_id, record)
            return rotation

    async def revoke_family(self, family_id: str) -> None:
        with self._lock:
            if family_id in self._families:
                self._revoke(family_id)

    async def revoke_subject(self, subject: str, *, now: float) -> int:
        with self._lock:
            live = self._live_families(subject, now)
            for family_id in tuple(self._by_subject.get(subject, ())):
                self._revoke(family_id)
            return len(live)

    async def session_active(self, session_id: str, *, now: float) -> bool:
        with self._lock:
            return self._live_session(session_id, now) is not None

    async def list_sessions(
        self, subject: str, *, now: float, limit: int, after: SessionCursor | None = None
    ) -> list[SessionRecord]:
        with self._lock:
            records = [self._families[family_id] for family_id in self._live_families(subject, now)]
        sessions = [
            record.session()
            for record in records
            if after is None or after.is_before(record.created_at, record.session_id)
        ]
        sessions.sort(key=lambda session: (session.created_at, session.session_id), reverse=True)
        return sessions[:limit]

    async def revoke_other_sessions(self, subject: str, keep: str | None, *, now: float) -> int:
        with self._lock:
            ended = [
                family_id
                for family_id in self._live_families(subject, now)
                if self._families[family_id].session_id != keep
            ]
            for family_id in ended:
                self._revoke(family_id)
            return len(ended)

    async def revoke_session(self, subject: str, session_id: str, *, now: float) -> bool:
        with self._lock:
            family_id = self._live_session(session_id, now)
            if family_id is None or self._families[family_id].subject != subject:
                return False
            self._revoke(family_id)
            return True

    async def close(self) -> None:
        return None

    async def first_use(self, key: str, *, expires_at: float, now: float) -> bool:
        """``ProofReplayCache``: at most ``MAX_PROOF_KEYS`` unexpired keys."""
        with self._lock:
            proofs, expiries = self._proofs, self._proof_expiries
            while expiries and expiries[0][0] <= now:
                _, old = heapq.heappop(expiries)
                if proofs.get(old, now) <= now:
                    proofs.pop(old, None)
            if proofs.get(key, now) > now:
                return False
            if len(proofs) >= MAX_PROOF_KEYS:
                raise StoreUnavailableError()
            proofs[key] = expires_at
            heapq.heappush(expiries, (expires_at, key))
            return True

    def _live_session(self, session_id: str, now: float) -> str | None:
        family_id = self._by_session.get(session_id)
        if family_id is None:
            return None
        record = self._families.get(family_id)
        # FamilyRecord.is_live, spelt out: every guarded request of a new session passes here.
        live = record is not None and not record.revoked and now < record.expires_at
        return family_id if live else None

    def _live_families(self, subject: str, now: float) -> list[str]:
        # The subject's index holds no revoked family; an expired one leaves it here.
        families = self._by_subject.get(subject, set())
        for family_id in [f for f in families if self._families[f].expires_at <= now]:
            self._unindex(subject, family_id)
        return list(families)

    def _revoke(self, family_id: str) -> None:
        self._put(family_id, revoked_record(self._families[family_id]))

    def _put(self, family_id: str, record: FamilyRecord) -> None:
        self._families[family_id] = record
        if record.revoked:
            self._unindex(record.subject, family_id)
        else:
            self._by_subject.setdefault(record.subject, set()).add(family_id)
        if record.session_id:
            self._by_session[record.session_id] = family_id

    def _unindex(self, subject: str, family_id: str) -> None:
        families = self._by_subject.get(subject)
        if families is not None:
            families.discard(family_id)
            if not families:
                del self._by_subject[subject]

    def _delete(self, family_id: str) -> None:
        record = self._families.pop(family_id, None)
        if record is None:
            return
        self._by_session.pop(record.session_id, None)
        self._unindex(record.subject, family_id)

    def _purge(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            _, family_id = heapq.heappop(self._expiries)
            record = self._families.get(family_id)
            if record is None:
                continue
            if record.expires_at <= now:
                self._delete(family_id)
            else:
                heapq.heappush(self._expiries, (record.expires_at, family_id))
