"""The import path of the store Protocol before the ``stores`` package: kept so that code written
against it keeps working. New code imports from ``auth_refresh.stores``."""

from auth_refresh.stores import (
    FamilyRecord,
    RefreshTokenStore,
    Rotation,
    RotationOutcome,
    SessionRecord,
    SessionStart,
    StoreFactory,
    Successor,
    decide_rotation,
    new_family_record,
    open_store,
    register_store_scheme,
    revoked_record,
    store_factory_for,
)

__all__ = [
    "FamilyRecord",
    "RefreshTokenStore",
    "Rotation",
    "RotationOutcome",
    "SessionRecord",
    "SessionStart",
    "StoreFactory",
    "Successor",
    "decide_rotation",
    "new_family_record",
    "open_store",
    "register_store_scheme",
    "revoked_record",
    "store_factory_for",
]
