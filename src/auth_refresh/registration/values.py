"""How a registration's values are layered in its container.

A registration's values become the *defaults* of its container's providers
(``Dependency.set_default``), beneath any override; a feature's defaults are the global
registration's providers themselves, so it resolves through them. A service given as a
dependency-injector provider becomes the default itself. A feature's own settings are merged
over the global registration's when they are resolved, so an override of the global settings
reaches the feature too.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from dependency_injector import providers

from auth_refresh.exceptions import ConfigurationError
from auth_refresh.registration.checks import refuse_class
from auth_refresh.registration.container import AuthRefreshContainer
from auth_refresh.registration.options import OPTION_PROVIDERS, AuthRefreshOptions
from auth_refresh.settings import AuthRefreshSettings, build_settings
from auth_refresh.transport.extractors import extractor_for

__all__ = [
    "SERVICE_OPTIONS",
    "MergedSettings",
    "inherit_from_global",
    "registration_defaults",
    "reset_registration_values",
    "set_registration_values",
    "settings_values",
]

log = logging.getLogger("auth_refresh")

SERVICE_OPTIONS = tuple(name for name in OPTION_PROVIDERS if name != "settings")
# What a feature takes from the global registration when it does not set it itself.
_INHERITED = ("settings", "verifier", "issuer", "user_lookup", "clock")


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
