"""``memory://``: token families in a dict, for one process and for tests."""

from __future__ import annotations

import heapq
import threading

from auth_refresh.store import (
    FamilyRecord,
    Rotation,
    Successor,
    decide_rotation,
    new_family_record,
    revoked_record,
)

__all__ = ["MemoryRefreshTokenStore"]


class MemoryRefreshTokenStore:
    """Families in memory; one lock makes each step atomic across threads and event loops."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: dict[str, FamilyRecord] = {}
        self._by_subject: dict[str, set[str]] = {}
        # One (expires_at, family_id) entry per family, pushed at its start: an entry that comes
        # due for a family that lives longer now is pushed again with its new expiry, so the
        # heap stays as large as the families, however often they rotate.
        self._expiries: list[tuple[float, str]] = []

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
        record = new_family_record(
            subject,
            token_id,
            token_expires_at=token_expires_at,
            now=now,
            absolute_lifetime=absolute_lifetime,
        )
        with self._lock:
            self._purge(now)
            if family_id not in self._families:
                heapq.heappush(self._expiries, (record.expires_at, family_id))
            self._put(family_id, record)

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
            record = self._families.get(family_id)
            if record is not None:
                self._families[family_id] = revoked_record(record)

    async def revoke_subject(self, subject: str) -> None:
        with self._lock:
            for family_id in self._by_subject.get(subject, ()):
                self._families[family_id] = revoked_record(self._families[family_id])

    async def close(self) -> None:
        return None

    def _put(self, family_id: str, record: FamilyRecord) -> None:
        self._families[family_id] = record
        self._by_subject.setdefault(record.subject, set()).add(family_id)

    def _delete(self, family_id: str) -> None:
        record = self._families.pop(family_id, None)
        if record is None:
            return
        families = self._by_subject.get(record.subject)
        if families is not None:
            families.discard(family_id)
            if not families:
                del self._by_subject[record.subject]

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
