"""What a refresh registration is given, and how its values are layered in its container.

The five registration classmethods share these definitions: ``RegistrationOptions`` for the
synchronous ones, ``AsyncRegistrationOptions`` for the two async ones, ``AuthRefreshOptions``
for what an options factory returns. A registration's values become the *defaults* of its
container's providers (``Dependency.set_default``), beneath any override; a feature's
defaults are the global registration's providers themselves, so it resolves through them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict

from dependency_injector import containers, providers

from auth_refresh._utils import MaybeAwaitable, resolve
from auth_refresh.exceptions import ConfigurationError
from auth_refresh.registration.checks import refuse_class
from auth_refresh.registration.container import AuthRefreshContainer
from auth_refresh.settings import AuthRefreshSettings, build_settings
from auth_refresh.stores.base import RefreshTokenStore
from auth_refresh.transport.extractors import extractor_for
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
]

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


class RegistrationOptions(_RouteOptions, total=False):
    """The keyword options of ``for_root``, ``register`` and ``for_feature``; all optional, but
    a registration needs a ``user_lookup_service`` of its own or inherited.

    A feature (``register``, ``for_feature``) takes from the global registration every service
    it does not set; its ``settings`` are the global registration's with its own values merged
    over them."""

    user_lookup_service: AuthRefreshUserLookupServiceInterface
    """Finds the user a refresh token's subject names: ``by_subject(subject)``, sync or async,
    the user or ``None`` (a 401). Default: the global registration's, for a feature; required
    for ``for_root``."""

    issue_token_service: IssueTokenServiceInterface
    """Signs the new access and refresh tokens. Default: the global registration's, else
    ``AuthenticationModule``'s (the ``JWT_MODULE_*`` settings)."""

    verify_token_service: VerifyTokenServiceInterface
    """Verifies a refresh token's signature and claims. Default: the global registration's,
    else ``AuthenticationModule``'s."""

    settings: AuthRefreshSettings | Mapping[str, Any]
    """``AuthRefreshSettings`` or a mapping of its fields (``jwt_from_request``,
    ``rotation``, ``store_url``, the cookie transport...); names not given come from the
    ``AUTH_REFRESH_*`` environment. Default: the environment's, for ``for_root``; the global
    registration's, for a feature, with the values given here merged over them."""

    store: RefreshTokenStore
    """The refresh-token store to use instead of the one ``settings.store_url`` names; closed
    at shutdown. Default: the store of ``store_url`` (shared with the global registration when
    the URL is the same)."""


@dataclass(frozen=True, kw_only=True)
class AuthRefreshOptions:
    """What an options factory returns (or a mapping of these); None keeps the inherited value."""

    user_lookup_service: AuthRefreshUserLookupServiceInterface | None = None
    issue_token_service: IssueTokenServiceInterface | None = None
    verify_token_service: VerifyTokenServiceInterface | None = None
    settings: AuthRefreshSettings | Mapping[str, Any] | None = None
    store: RefreshTokenStore | None = None


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
}
SERVICE_OPTIONS = tuple(name for name in OPTION_PROVIDERS if name != "settings")
# What a feature takes from the global registration when it does not set it itself.
_INHERITED = ("settings", "verifier", "issuer", "user_lookup", "clock")


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


def set_registration_values(
    name: str, container: AuthRefreshContainer, options: AuthRefreshOptions
) -> set[str]:
    """Make ``options`` the defaults of ``container``'s providers; the names of those set."""
    set_providers = set()
    for field in dataclasses.fields(options):
        value = getattr(options, field.name)
        if value is None:
            continue
        if field.name == "settings":
            try:
                value = build_settings(AuthRefreshSettings, value)
            except ConfigurationError as error:
                raise ConfigurationError(f"{name}: {error.message}") from None
        else:
            refuse_class(name, field.name, value)
        provider_name = OPTION_PROVIDERS[field.name]
        getattr(container, provider_name).set_default(providers.Object(value))
        set_providers.add(provider_name)
    return set_providers


def inherit_from_global(
    container: AuthRefreshContainer, root: AuthRefreshContainer, own: set[str]
) -> None:
    """Default what the feature's registration did not set to the global one's providers."""
    for provider_name in _INHERITED:
        if provider_name not in own:
            getattr(container, provider_name).set_default(getattr(root, provider_name))
    if "settings" not in own:
        # Inherited settings bring the global extractor, overrides of it included; a test
        # overriding the feature's settings gets the extractor those settings name.
        container.extractor.set_default(
            providers.Callable(
                _extractor_of,
                container.settings,
                root.settings,
                root.extractor.provider,
            )
        )


def share_global_store(container: AuthRefreshContainer, root: AuthRefreshContainer) -> None:
    """One URL, one store: pairs a login through the global module starts must be found."""
    container.store.set_default(root.store)


def _extractor_of(
    settings: AuthRefreshSettings,
    root_settings: AuthRefreshSettings,
    root_extractor: providers.Provider[Any],
) -> Any:
    if settings is root_settings:
        return root_extractor()
    return extractor_for(settings)


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
