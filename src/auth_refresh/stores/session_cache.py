"""Which sessions are live, as the access guard sees them: a per-process cache over the store.

An access token issued with rotation names its session (``sid``). The guard refuses it once
the session is revoked, asking the store at most once per session per check interval
(``session_check_interval``, 1 s by default): a revocation made by another worker is seen
within that interval. Revocations made through this process are marked here at once. Requests
that need the same session's state while the store is being asked share that one read.

When the store cannot answer, a session the store last said was live stays live for at most
``session_check_stale_seconds`` after that answer (0: refuse at once); then the guard answers
503 like the store. A session revoked meanwhile lives that long during an outage.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from auth_refresh.exceptions import StoreUnavailableError
from auth_refresh.stores.base import RefreshTokenStore
from auth_refresh.telemetry import record_session_check, store_step

__all__ = ["SessionCache", "session_cache"]

# Bounded: an evicted session is read from the store again, nothing more.
MAX_ENTRIES = 100_000
NEVER = float("inf")


@dataclass(slots=True)
class _Known:
    subject: str | None  # None: revoked here by family, its subject not known
    live: bool
    # time.monotonic() after which to ask the store again (never, once revoked)
    fresh_until: float
    # time.monotonic() of the store's last answer that it is live
    confirmed_at: float = 0.0


class SessionCache:
    """Live and revoked sessions of one store, for one process."""

    def __init__(self) -> None:
        self._known: OrderedDict[str, _Known] = OrderedDict()
        self._by_subject: dict[str, set[str]] = {}
        self._reading: dict[str, asyncio.Task[bool]] = {}

    async def is_active(
        self,
        store: RefreshTokenStore,
        session_id: str,
        subject: str,
        *,
        clock: Callable[[], float],
        interval: float,
        stale: float,
    ) -> bool:
        """Whether ``session_id`` is live: cached, or read from ``store`` as of ``clock()``;
        while the store cannot answer, live if it said so at most ``stale`` seconds ago."""
        known = self._known.get(session_id)
        if known is not None and not known.live:
            return False  # a revocation is for good
        if known is not None and known.subject == subject and time.monotonic() < known.fresh_until:
            return True
        loop = asyncio.get_running_loop()
        reading = self._reading.get(session_id)
        if reading is None or reading.get_loop() is not loop:
            # A task of its own: a request that goes away does not cancel the others' read.
            reading = loop.create_task(
                self._read(store, session_id, subject, clock, interval, stale)
            )
            reading.add_done_callback(_retrieve)
            self._reading[session_id] = reading
        return await asyncio.shield(reading)

    async def _read(
        self,
        store: RefreshTokenStore,
        session_id: str,
        subject: str,
        clock: Callable[[], float],
        interval: float,
        stale: float,
    ) -> bool:
        try:
            with store_step("session_active"):
                live = await store.session_active(session_id, now=clock())
        except StoreUnavailableError:
            if not self._still_live(session_id, subject, interval, stale):
                record_session_check("store_unavailable")
                raise
            record_session_check("stale")
            return True
        finally:
            if self._reading.get(session_id) is asyncio.current_task():
                del self._reading[session_id]
        known = self._known.get(session_id)
        if known is not None and not known.live:
            return False  # revoked here while the store was being asked
        now = time.monotonic()
        self._remember(session_id, subject, live, now + interval if live else NEVER)
        if live:
            self._known[session_id].confirmed_at = now
        record_session_check("live" if live else "ended")
        return live

    def _still_live(self, session_id: str, subject: str, interval: float, stale: float) -> bool:
        # The store said live at most ``stale`` seconds ago: trust that, for now.
        known = self._known.get(session_id)
        now = time.monotonic()
        if known is None or not known.live or known.subject != subject:
            return False
        if now - known.confirmed_at > stale:
            return False
        # Not asked again for an interval: each request would wait for the store's timeout.
        known.fresh_until = min(now + interval, known.confirmed_at + stale)
        return True

    def revoked(self, session_id: str, subject: str | None = None) -> None:
        """Mark ``session_id`` revoked in this process, at once."""
        known = self._known.get(session_id)
        if known is not None:
            known.live, known.fresh_until = False, NEVER
        else:
            self._remember(session_id, subject, False, NEVER)

    def subject_revoked(self, subject: str) -> None:
        """Mark every session of ``subject`` this process knows revoked (the others are read
        from the store, which has them revoked)."""
        for session_id in tuple(self._by_subject.get(subject, ())):
            self.revoked(session_id)

    def others_revoked(self, subject: str, keep: str | None) -> None:
        """Mark every session of ``subject`` this process knows revoked, but ``keep``."""
        for session_id in tuple(self._by_subject.get(subject, ())):
            if session_id != keep:
                self.revoked(session_id)

    def _remember(
        self, session_id: str, subject: str | None, live: bool, fresh_until: float
    ) -> None:
        if session_id in self._known:
            self._forget(session_id)
        self._known[session_id] = _Known(subject, live, fresh_until)
        if subject is not None:
            self._by_subject.setdefault(subject, set()).add(session_id)
        while len(self._known) > MAX_ENTRIES:
            self._forget(next(iter(self._known)))

    def _forget(self, session_id: str) -> None:
        known = self._known.pop(session_id)
        if known.subject is None:
            return
        sessions = self._by_subject.get(known.subject)
        if sessions is not None:
            sessions.discard(session_id)
            if not sessions:
                del self._by_subject[known.subject]


def _retrieve(task: asyncio.Task[bool]) -> None:
    # Each waiting request raised the error itself; the task's own copy is not "never retrieved".
    if not task.cancelled():
        task.exception()


_caches: weakref.WeakKeyDictionary[RefreshTokenStore, SessionCache] = weakref.WeakKeyDictionary()


def session_cache(store: RefreshTokenStore) -> SessionCache:
    """The cache of ``store`` in this process: every module sharing the store shares it."""
    cache = _caches.get(store)
    if cache is None:
        cache = _caches[store] = SessionCache()
    return cache
