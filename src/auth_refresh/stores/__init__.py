"""Where token families live: the store Protocol, its records and ``decide_rotation``; the
URL-scheme registry; the stores (memory, SQLite, Redis, Redis Cluster, PostgreSQL); and what a
store keeps of a token instead of the token (``sealing``).

The Redis, Redis Cluster and PostgreSQL stores need their extras and are imported when a URL
names them: ``auth_refresh.stores.redis``, ``.redis_cluster``, ``.postgres``.
"""

from auth_refresh.stores.base import (
    SESSION_PAGE_MAX,
    FamilyRecord,
    RefreshTokenStore,
    Rotation,
    RotationOutcome,
    SessionCursor,
    SessionRecord,
    SessionStart,
    Successor,
    decide_rotation,
    new_family_record,
    revoked_record,
)
from auth_refresh.stores.memory import MemoryRefreshTokenStore
from auth_refresh.stores.registry import (
    StoreFactory,
    open_store,
    register_store_scheme,
    store_factory_for,
)
from auth_refresh.stores.sqlite import SqliteRefreshTokenStore

__all__ = [
    "SESSION_PAGE_MAX",
    "FamilyRecord",
    "MemoryRefreshTokenStore",
    "RefreshTokenStore",
    "Rotation",
    "RotationOutcome",
    "SessionCursor",
    "SessionRecord",
    "SessionStart",
    "SqliteRefreshTokenStore",
    "StoreFactory",
    "Successor",
    "decide_rotation",
    "new_family_record",
    "open_store",
    "register_store_scheme",
    "revoked_record",
    "store_factory_for",
]
