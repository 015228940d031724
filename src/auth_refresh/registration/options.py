"""What a refresh registration is given: ``RegistrationOptions`` for the synchronous
registration classmethods, ``AsyncRegistrationOptions`` for the two async ones,
``AuthRefreshOptions`` for what an options factory returns; and the factories themselves.
How the values are layered in the registration's container is ``registration.values``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict

from dependency_injector import containers, providers

from auth_refresh._utils import MaybeAwaitable, resolve
from auth_refresh.exceptions import ConfigurationError
from auth_refresh.settings import AuthRefreshSettings
from auth_refresh.stores.base import RefreshTokenStore
from auth_refresh.transport.extractors import TokenExtractor
from auth_refresh.types import (
    AuthRefreshUserLookupServiceInterface,
    IssueTokenServiceInterface,
    VerifyTokenServiceInterface,
)

__all__ = [
    "AsyncRegistrationOptions",
    "AuthRefreshOptions",
    "AuthRefreshOptionsFactory",
    "AuthRefreshUserLookupServiceInterface",
    "OptionsFactory",
    "RegistrationOptions",
    "Routes",
]

log = logging.getLogger("auth_refresh")

DEFAULT_PATH = "/auth/refresh"


class _RouteOptions(TypedDict, total=False):
    controllers: bool
    """Add the refresh route ``POST {path}``. Default: ``True`` (``False`` for
    ``for_feature``, whose routes are usually the application's own, guarded by
    ``AuthRefreshGuard(feature)``)."""

    path: str
    """The refresh route's path. Default: ``"/auth/refresh"``; two registrations with routes
    need two paths."""

    logout_path: str | None
    """Add ``POST {logout_path}``, which revokes the presented refresh token's family (the
    session). Default: ``None``, no logout route."""

    sessions_path: str | None
    """Add ``GET {sessions_path}`` (the caller's live sessions), ``POST
    {sessions_path}/revoke-others`` and ``DELETE {sessions_path}/{session_id}``, authenticated
    by the access token of the application's ``AuthJwtModule``. Default: ``None``, no session
    routes."""

    readiness_path: str | None
    """Add ``GET {readiness_path}``: 200 ``{"status": "ready"}`` while the store answers
    (within 2 s) and holds this release's schema, else 503 with ``Retry-After`` and the reason.
    At startup, a schema newer than this release's stops the application with
    ``ConfigurationError``; a store that cannot be reached only logs a warning, and this route
    answers 503 until it is back. Default: ``None``, no readiness route."""


@dataclass(frozen=True)
class Routes:
    """The routes a registration adds (``_RouteOptions``), as one value."""

    controllers: bool = True
    path: str = DEFAULT_PATH
    logout_path: str | None = None
    sessions_path: str | None = None
    readiness_path: str | None = None

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> Routes:
        """The route options in ``options`` (the others are left to the caller)."""
        return cls(
            **{key: options[key] for key in _RouteOptions.__optional_keys__ if key in options}
        )


class RegistrationOptions(_RouteOptions, total=False):
    """The keyword options of ``for_root``, ``register`` and ``for_feature``; all optional, but
    a registration needs a ``user_lookup_service`` of its own or inherited. Each service may
    also be given as a dependency-injector provider (any kind, async ones included), resolved
    when it is used.

    A feature (``register``, ``for_feature``) takes from the global registration every service
    it does not set; its ``settings`` are the global registration's with its own values merged
    over them."""

    user_lookup_service: AuthRefreshUserLookupServiceInterface | providers.Provider[Any]
    """Finds the user a refresh token's subject names: ``by_subject(subject)``, sync or async,
    the user or ``None`` (a 401). Default: the global registration's, for a feature; required
    for ``for_root``."""

    issue_token_service: IssueTokenServiceInterface | providers.Provider[Any]
    """Signs the new access and refresh tokens. Default: the global registration's, else
    ``AuthenticationModule``'s (the ``JWT_MODULE_*`` settings)."""

    verify_token_service: VerifyTokenServiceInterface | providers.Provider[Any]
    """Verifies a refresh token's signature and claims. Default: the global registration's,
    else ``AuthenticationModule``'s."""

    settings: AuthRefreshSettings | Mapping[str, Any]
    """``AuthRefreshSettings`` or a mapping of its fields (``jwt_from_request``,
    ``rotation``, ``store_url``, the cookie transport...); names not given come from the
    ``AUTH_REFRESH_*`` environment. Default: the environment's, for ``for_root``; the global
    registration's, for a feature, with the values given here merged over them."""

    store: RefreshTokenStore | providers.Provider[Any]
    """The refresh-token store to use instead of the one ``settings.store_url`` names; closed
    at shutdown. Default: the store of ``store_url`` (shared with the global registration when
    the URL is the same)."""

    jwt_from_request: TokenExtractor | providers.Provider[Any]
    """The refresh token's extractor, instead of ``settings.jwt_from_request`` (giving both is a
    ``ConfigurationError``). Default: the global registration's, else the body field
    ``refreshToken``."""


@dataclass(frozen=True, kw_only=True)
class AuthRefreshOptions:
    """What an options factory returns (or a mapping of these); None keeps the inherited value."""

    user_lookup_service: AuthRefreshUserLookupServiceInterface | providers.Provider[Any] | None = (
        None
    )
    issue_token_service: IssueTokenServiceInterface | providers.Provider[Any] | None = None
    verify_token_service: VerifyTokenServiceInterface | providers.Provider[Any] | None = None
    settings: AuthRefreshSettings | Mapping[str, Any] | None = None
    store: RefreshTokenStore | providers.Provider[Any] | None = None
    jwt_from_request: TokenExtractor | providers.Provider[Any] | None = None


class AuthRefreshOptionsFactory(Protocol):
    """For ``use_class``: built with the ``inject`` values, ``create()`` gives the options."""

    def create(self) -> MaybeAwaitable[AuthRefreshOptions | Mapping[str, Any]]: ...


OptionsFactory = Callable[..., MaybeAwaitable[AuthRefreshOptions | Mapping[str, Any]]]


class AsyncRegistrationOptions(_RouteOptions, total=False):
    """The keyword options of ``for_root_async`` and ``register_async``: exactly one of
    ``factory`` and ``use_class``, called at every startup of the application with the values
    of the ``inject`` providers."""

    factory: OptionsFactory
    """Makes the registration's options: ``factory(*inject_values)``, sync or async, returning
    ``AuthRefreshOptions`` or a mapping of its fields. No default: this or ``use_class``."""

    use_class: type[AuthRefreshOptionsFactory]
    """A class built with the ``inject`` values whose ``create()`` makes the options. No
    default: this or ``factory``."""

    inject: Sequence[providers.Provider[Any]]
    """dependency-injector providers of a container *instance*, resolved (and awaited) at
    startup and passed to the factory in order. Default: ``()``."""


def refuse_unknown_options(name: str, given: Mapping[str, Any], accepted: frozenset[str]) -> None:
    """A registration's keyword arguments must be its options (a typo is not ignored)."""
    unknown = sorted(set(given) - accepted)
    if unknown:
        raise ConfigurationError(
            f"{name}: unknown options {unknown}; the options are {', '.join(sorted(accepted))}"
        )


REGISTRATION_OPTIONS = RegistrationOptions.__optional_keys__
ASYNC_REGISTRATION_OPTIONS = AsyncRegistrationOptions.__optional_keys__

# Which provider each option sets.
OPTION_PROVIDERS = {
    "user_lookup_service": "user_lookup",
    "issue_token_service": "issuer",
    "verify_token_service": "verifier",
    "settings": "settings",
    "store": "store",
    "jwt_from_request": "extractor",
}


def options_of(name: str, given: AuthRefreshOptions | Mapping[str, Any]) -> AuthRefreshOptions:
    """``given`` as ``AuthRefreshOptions``; unknown names are a ``ConfigurationError``."""
    if isinstance(given, AuthRefreshOptions):
        return given
    if not isinstance(given, Mapping):
        raise ConfigurationError(
            f"{name}: the options factory returned {type(given).__name__}; return "
            "AuthRefreshOptions(...) or a mapping of its fields"
        )
    refuse_unknown_options(name, given, frozenset(OPTION_PROVIDERS))
    return AuthRefreshOptions(**given)


def check_inject(name: str, inject: Sequence[Any]) -> tuple[providers.Provider[Any], ...]:
    """The ``inject`` providers; a value or a provider of a container *class* is refused."""
    for provider in inject:
        if not isinstance(provider, providers.Provider):
            raise ConfigurationError(
                f"{name}: 'inject' takes dependency-injector providers, got "
                f"{type(provider).__name__}; wrap a value in providers.Object(value)"
            )
        owner = _container_class_of(provider)
        if owner is not None:
            raise ConfigurationError(
                f"{name}: 'inject' got a provider of the container class {owner.__name__}, "
                f"which knows nothing of what was configured on an instance; pass the "
                f"instance's provider (container = {owner.__name__}(); ... "
                f"inject=[container.<provider>])"
            )
    return tuple(inject)


def _container_class_of(provider: providers.Provider[Any]) -> type[Any] | None:
    pending: list[type[Any]] = [containers.DeclarativeContainer]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls is not containers.DeclarativeContainer and any(
            candidate is provider for candidate in cls.cls_providers.values()
        ):
            return cls
    return None


def options_factory(
    name: str, factory: OptionsFactory | None, use_class: type[AuthRefreshOptionsFactory] | None
) -> OptionsFactory:
    """The one factory ``factory`` or ``use_class`` names."""
    if (factory is None) == (use_class is None):
        raise ConfigurationError(f"{name}: give exactly one of 'factory' and 'use_class'")
    if factory is not None:
        return factory
    assert use_class is not None
    options_class = use_class

    def create(*values: Any) -> MaybeAwaitable[AuthRefreshOptions | Mapping[str, Any]]:
        return options_class(*values).create()

    return create


async def run_options_factory(
    name: str, factory: OptionsFactory, inject: Sequence[providers.Provider[Any]]
) -> Any:
    """``factory(*inject)``'s options, each injected provider resolved first."""
    try:
        values = [await resolve(provider()) for provider in inject]
        return await resolve(factory(*values))
    except Exception as error:
        raise ConfigurationError(
            f"{name}: the options factory failed: {type(error).__name__}: {error}"
        ) from error
