"""What a refresh registration is given, and how its values are layered in its container.

The five registration classmethods share these definitions: ``RegistrationOptions`` for the
synchronous ones, ``AsyncRegistrationOptions`` for the two async ones, ``AuthRefreshOptions``
for what an options factory returns. A registration's values become the *defaults* of its
container's providers (``Dependency.set_default``), beneath any override; a feature's
defaults are the global registration's providers themselves, so it resolves through them. A
service given as a dependency-injector provider becomes the default itself. A feature's own
settings are merged over the global registration's when they are resolved, so an override of
the global settings reaches the feature too.
"""

from __future__ import annotations

import dataclasses
import logging
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
from auth_refresh.transport.extractors import TokenExtractor, extractor_for
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
    "MergedSettings",
    "OptionsFactory",
    "RegistrationOptions",
]

log = logging.getLogger("auth_refresh")

DEFAULT_PATH = "/auth/refresh"


class _RouteOptions(TypedDict, total=False):
    controllers: bool  # add POST {path} (default: True; False for for_feature)
    path: str  # the refresh route (default "/auth/refresh")
    logout_path: str | None  # add POST {logout_path}, revoking the presented token's family
    # add GET {sessions_path}, DELETE {sessions_path}/{session_id}, POST .../revoke-others
    sessions_path: str | None
    # add GET {readiness_path}: 200 when the store answers with this release's schema, else 503
    readiness_path: str | None


class RegistrationOptions(_RouteOptions, total=False):
    """The options of ``for_root``, ``register`` and ``for_feature``.

    Each service may also be given as a dependency-injector provider (any kind, async ones
    included), resolved when it is used. A feature's ``settings`` are merged over the global
    registration's."""

    user_lookup_service: AuthRefreshUserLookupServiceInterface | providers.Provider[Any]
    issue_token_service: IssueTokenServiceInterface | providers.Provider[Any]
    verify_token_service: VerifyTokenServiceInterface | providers.Provider[Any]
    settings: AuthRefreshSettings | Mapping[str, Any]
    # used instead of settings.store_url's; closed at shutdown
    store: RefreshTokenStore | providers.Provider[Any]
    # the refresh token's extractor (instead of settings.jwt_from_request)
    jwt_from_request: TokenExtractor | providers.Provider[Any]


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
    """The options of ``for_root_async`` and ``register_async``: exactly one of ``factory`` and
    ``use_class``, called at startup with the values of the ``inject`` providers."""

    factory: OptionsFactory
    use_class: type[AuthRefreshOptionsFactory]
    inject: Sequence[providers.Provider[Any]]


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
            if value.jwt_from_request is not None and options.jwt_from_request is not None:
                raise ConfigurationError(
                    f"{name}: give the extractor once: the option 'jwt_from_request' or "
                    "settings.jwt_from_request"
                )
        elif not isinstance(value, providers.Provider):
            refuse_class(name, field.name, value)
        provider_name = OPTION_PROVIDERS[field.name]
        # A provider stands for the service itself: resolved when used, whatever its kind.
        default = value if isinstance(value, providers.Provider) else providers.Object(value)
        getattr(container, provider_name).set_default(default)
        set_providers.add(provider_name)
    return set_providers


def reset_registration_values(
    container: AuthRefreshContainer, defaults: Mapping[str, providers.Provider[Any] | None]
) -> None:
    """Give ``container``'s providers their built-in ``defaults`` back (before an options
    factory's next run: what it no longer sets must not linger)."""
    for provider_name, default in defaults.items():
        getattr(container, provider_name).set_default(default)


def registration_defaults(
    container: AuthRefreshContainer,
) -> dict[str, providers.Provider[Any] | None]:
    """The built-in defaults of ``container``'s providers a registration may set."""
    names = {*OPTION_PROVIDERS.values(), *_INHERITED}
    return {name: getattr(container, name).default for name in sorted(names)}


def settings_values(given: AuthRefreshSettings | Mapping[str, Any] | None) -> dict[str, Any]:
    """The settings a registration sets itself: a mapping's, or those an ``AuthRefreshSettings``
    was made with (its environment's included)."""
    if given is None:
        return {}
    if isinstance(given, AuthRefreshSettings):
        return {name: getattr(given, name) for name in given.model_fields_set}
    return dict(given)


class MergedSettings:
    """A feature's settings: the global registration's with the feature's ``values`` merged
    over them, made again only when the global settings are others (an override)."""

    def __init__(self, name: str, values: Mapping[str, Any]) -> None:
        self.name = name
        self.values = dict(values)
        self._made: tuple[AuthRefreshSettings, AuthRefreshSettings] | None = None

    def __call__(self, base: AuthRefreshSettings) -> AuthRefreshSettings:
        made = self._made
        if made is not None and made[0] is base:
            return made[1]
        given = {name: getattr(base, name) for name in type(base).model_fields}
        try:
            merged = type(base)(**{**given, **self.values})
        except ConfigurationError as error:
            raise ConfigurationError(
                f"{self.name}: its settings merged over the global registration's: {error.message}"
            ) from None
        self._made = (base, merged)
        return merged


def inherit_from_global(
    name: str,
    container: AuthRefreshContainer,
    root: AuthRefreshContainer,
    own: set[str],
    own_settings: Mapping[str, Any],
) -> None:
    """Default what the feature's registration did not set to the global one's providers;
    its own settings values merged over the global settings."""
    for provider_name in _INHERITED:
        if provider_name not in own:
            getattr(container, provider_name).set_default(getattr(root, provider_name))
    if "settings" in own:
        container.settings.set_default(
            providers.Callable(MergedSettings(name, own_settings), root.settings)
        )
    _share_global_store(name, container, root, own)
    if "extractor" not in own:
        # The global extractor, overrides of it included, while the feature's settings ask
        # for the same; a feature (or a test overriding its settings) asking for another
        # gets the extractor its settings name.
        container.extractor.set_default(
            providers.Callable(
                _extractor_of,
                container.settings,
                root.settings,
                root.extractor.provider,
            )
        )


def _share_global_store(
    name: str, container: AuthRefreshContainer, root: AuthRefreshContainer, own: set[str]
) -> None:
    # One URL, one store: pairs a login through the global module starts must be found.
    if "store" in own:
        return
    try:
        settings, inherited = container.settings(), root.settings()
    except ConfigurationError:
        return  # reported by the checks with the registration's name
    if settings.store_url == inherited.store_url:
        container.store.set_default(root.store)
    elif settings.rotation and inherited.rotation:
        # Meant for a feature with families of its own, but worth saying.
        log.warning(
            "%s: its store_url is not the global registration's: a pair issued through "
            "one is unknown to the other, whose refresh route answers it with a 401",
            name,
        )


# What the extractor extractor_for makes depends on.
_EXTRACTION_SETTINGS = ("jwt_from_request", "cookie_transport", "cookie_name")


def _extractor_of(
    settings: AuthRefreshSettings,
    root_settings: AuthRefreshSettings,
    root_extractor: providers.Provider[Any],
) -> Any:
    if settings is root_settings or all(
        getattr(settings, name) == getattr(root_settings, name) for name in _EXTRACTION_SETTINGS
    ):
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
