"""What a refresh registration does at startup besides its options: inherit from the global
registration, open its store, and ask the store whether it can serve."""

from __future__ import annotations

import logging
from collections.abc import Set
from typing import Any

from dependency_injector import providers

from auth_refresh._utils import resolve
from auth_refresh.exceptions import ConfigurationError
from auth_refresh.flows.refresh import RefreshFlow
from auth_refresh.registration.application import AppRegistry
from auth_refresh.registration.values import inherit_from_global
from auth_refresh.settings import AuthRefreshSettings
from auth_refresh.stores.base import ProofReplayCache, RefreshTokenStore

__all__ = ["check_store_at_startup", "global_registration", "inherit_global", "open_store"]

log = logging.getLogger("auth_refresh")


def inherit_global(
    name: str,
    container: Any,
    root: Any,
    *,
    needs_global: bool,
    own: set[str],
    own_settings: dict[str, Any],
) -> bool:
    """Take what the registration did not set from the global registration ``root`` (an
    ``AuthRefreshModule`` or None); whether there was one."""
    if root is None:
        if needs_global:
            raise ConfigurationError(
                f"{name}: needs AuthRefreshModule.for_root(...) or for_root_async(...) "
                "attached to the same application"
            )
        return False
    inherit_from_global(name, container, root.container, own, own_settings)
    return True


def global_registration(registry: AppRegistry | None, kind: str, *, is_global: bool) -> Any:
    """The global registration a feature inherits from, or None."""
    return None if is_global or registry is None else registry.root(kind)


async def open_store(
    name: str, container: Any, settings: AuthRefreshSettings, own: Set[str]
) -> RefreshTokenStore | None:
    """Open the registration's store now, so a bad URL fails at startup (the connection is
    made on first use); the store if the registration owns it and must close it."""
    if (not settings.rotation and settings.dpop == "off") or container.store.overridden:
        return None  # a store a test set is the test's to close
    default = container.store.default
    try:
        store = await resolve(container.store())
    except ConfigurationError as error:
        raise ConfigurationError(f"{name}: {error.message}") from None
    if settings.dpop != "off" and not isinstance(store, ProofReplayCache):
        raise ConfigurationError(
            f"{name}: AUTH_REFRESH_DPOP={settings.dpop} needs a store that keeps DPoP proofs "
            f"(ProofReplayCache.first_use); {type(store).__name__} does not"
        )
    # Its own (given or from store_url), not the global registration's.
    if "store" in own or isinstance(default, providers.ThreadSafeSingleton):
        return store  # type: ignore[no-any-return]
    return None


async def check_store_at_startup(name: str, flow: RefreshFlow) -> None:
    """Stop the application for a store this release cannot use (a newer schema); a store that
    does not answer may come up later: a warning, and readiness says 503 until then."""
    readiness = await flow.readiness()
    if readiness.fatal:
        raise ConfigurationError(f"{name}: {readiness.reason}")
    if not readiness.ready:
        log.warning(
            "%s: the store is not ready (%s); readiness answers 503 until it is",
            name,
            readiness.reason,
        )
