"""``AuthRefreshContainer``: the providers one refresh registration resolves per request.

Three layers, lowest first: the built-in default of each provider, the registration's value
(its options, its async factory's result, or what a feature inherits from the global
registration), and the overrides tests make. The registration's layer is each provider's
``Dependency`` default (``set_default``), never an override, so ``override``,
``override_providers``, ``reset_last_overriding`` and ``reset_override`` work as
dependency-injector documents them and a reset returns to the registration as configured.
"""

from __future__ import annotations

import time
from typing import Any

from dependency_injector import containers, providers

from auth_refresh.rotation import TokenRotationService
from auth_refresh.settings import AuthRefreshSettings, JwtSettings, build_settings
from auth_refresh.stores.base import RefreshTokenStore
from auth_refresh.stores.registry import open_store
from auth_refresh.tokens.jwt import IssueTokenService, JwtService, VerifyTokenService
from auth_refresh.transport.extractors import extractor_for

__all__ = ["AuthRefreshContainer"]


def store_from_settings(settings: AuthRefreshSettings) -> RefreshTokenStore:
    return open_store(settings.store_url)


class AuthRefreshContainer(containers.DeclarativeContainer):
    """Providers of one registration; tests override them on the module's instance.

    ``user_lookup`` has no default. ``issuer`` and ``verifier`` default to the
    authentication services over ``JWT_MODULE_*`` settings; ``extractor`` follows
    ``settings.jwt_from_request`` (cookie then body with cookie transport); ``store`` is the
    one ``settings.store_url`` names, opened on first use; ``clock`` gives the store's now.
    A feature registration's providers default to the global registration's, so what the
    feature does not set resolves through the global container, overrides included.
    """

    jwt_settings = providers.ThreadSafeSingleton(build_settings, JwtSettings)
    jwt_service = providers.ThreadSafeSingleton(JwtService, settings=jwt_settings)
    settings: providers.Dependency[AuthRefreshSettings] = providers.Dependency(
        instance_of=AuthRefreshSettings,
        default=providers.ThreadSafeSingleton(build_settings, AuthRefreshSettings),
    )
    extractor: providers.Dependency[Any] = providers.Dependency(
        default=providers.Callable(extractor_for, settings)
    )
    verifier: providers.Dependency[Any] = providers.Dependency(
        default=providers.ThreadSafeSingleton(VerifyTokenService, jwt_service)
    )
    issuer: providers.Dependency[Any] = providers.Dependency(
        default=providers.ThreadSafeSingleton(IssueTokenService, jwt_service)
    )
    user_lookup: providers.Dependency[Any] = providers.Dependency()
    clock: providers.Dependency[Any] = providers.Dependency(default=providers.Object(time.time))
    store: providers.Dependency[Any] = providers.Dependency(
        default=providers.ThreadSafeSingleton(store_from_settings, settings)
    )
    rotation = providers.Factory(
        TokenRotationService, store=store, issuer=issuer, settings=settings, clock=clock
    )
