"""Startup checks of a refresh registration: every provider resolves to something usable.

Each failure is a ``ConfigurationError`` naming the registration, the option as the user
wrote it, and what to give instead.
"""

from __future__ import annotations

import logging
from typing import Any

from dependency_injector import errors as di_errors

from auth_refresh.exceptions import ConfigurationError
from auth_refresh.registration.container import AuthRefreshContainer
from auth_refresh.settings import AuthRefreshSettings

__all__ = ["check_registration", "refuse_class", "require_methods"]

log = logging.getLogger("auth_refresh")


def check_registration(
    name: str,
    container: AuthRefreshContainer,
    logout_path: str | None,
    sessions_path: str | None = None,
) -> tuple[AuthRefreshSettings, Any]:
    """Resolve and check every provider; the settings and the extractor."""
    try:
        lookup = container.user_lookup()
    except di_errors.Error:
        raise ConfigurationError(
            f"{name}: the option 'user_lookup_service' is required "
            "(an object with by_subject(subject))"
        ) from None
    require_methods(name, "user_lookup_service", lookup, "by_subject")
    try:
        settings: AuthRefreshSettings = container.settings()
        if settings.verify_token is None:
            verifier = container.verifier()
            require_methods(name, "verify_token_service", verifier, "refresh_token")
        issuer = container.issuer()
    except ConfigurationError as error:
        if error.message.startswith(name):
            raise
        raise ConfigurationError(f"{name}: {error.message}") from None
    require_methods(name, "issue_token_service", issuer, "response_payload")
    if settings.rotation:
        require_methods(name, "issue_token_service", issuer, "access_token", "refresh_token")
    elif logout_path is not None:
        raise ConfigurationError(
            f"{name}: POST {logout_path} needs rotation (AUTH_REFRESH_ROTATION): "
            "a stateless refresh token cannot be revoked"
        )
    elif sessions_path is not None:
        raise ConfigurationError(
            f"{name}: the routes under {sessions_path} need rotation "
            "(AUTH_REFRESH_ROTATION): sessions are token families"
        )
    else:
        log.warning(
            "%s: AUTH_REFRESH_ROTATION is false: refresh tokens are stateless and can be "
            "replayed until they expire; reuse detection and revocation are off",
            name,
        )
    if settings.cookie_transport and not settings.cookie_secure:
        log.warning(
            "%s: AUTH_REFRESH_COOKIE_SECURE is false: the refresh cookie may travel over "
            "plain http; only for localhost development",
            name,
        )
    extractor = container.extractor()
    if not callable(extractor) or isinstance(extractor, type):
        raise ConfigurationError(
            f"{name}: settings.jwt_from_request is not an extractor; give a callable "
            "(request) -> token, e.g. ExtractJwt.from_auth_header_as_bearer_token()"
        )
    return settings, extractor


def refuse_class(name: str, option: str, service: Any) -> None:
    """A service given as its class (``Users`` for ``Users()``) is a mistake to name now."""
    if isinstance(service, type):
        raise ConfigurationError(
            f"{name}: the option '{option}' is the class {service.__name__}; pass an "
            f"instance, e.g. {option}={service.__name__}()"
        )


def require_methods(name: str, option: str, service: Any, *methods: str) -> None:
    """``service`` (an instance, not its class) has each of ``methods``."""
    refuse_class(name, option, service)
    for method in methods:
        if not callable(getattr(service, method, None)):
            raise ConfigurationError(f"{name}: the option '{option}' has no method {method}()")
