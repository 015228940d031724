"""Startup checks: every provider of a registration resolves to something usable, and the
application's routes and modules fit together.

Each failure is a ``ConfigurationError`` naming the registration, the option as the user
wrote it, and what to give instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from dependency_injector import errors as di_errors
from dependency_injector import providers
from fastapi.routing import iter_route_contexts
from starlette.routing import BaseRoute

from auth_refresh._utils import resolve
from auth_refresh.exceptions import ConfigurationError
from auth_refresh.flows.refresh import RefreshFlow
from auth_refresh.flows.sessions import SessionRoutes
from auth_refresh.registration.container import AuthRefreshContainer
from auth_refresh.settings import AuthRefreshSettings

__all__ = [
    "check_registration",
    "check_routes",
    "check_sessions_guard",
    "refuse_class",
    "require_methods",
    "resolved",
]

log = logging.getLogger("auth_refresh")


async def resolved(provider: providers.Provider[Any]) -> Any:
    """What ``provider`` gives, awaited when it is async (an async ``Resource``, a
    ``Coroutine``, a factory of an ``async def``)."""
    return await resolve(provider())


async def check_registration(
    name: str,
    container: AuthRefreshContainer,
    logout_path: str | None,
    sessions_path: str | None = None,
) -> tuple[AuthRefreshSettings, Any]:
    """Resolve and check every provider; the settings and the extractor."""
    try:
        lookup = await resolved(container.user_lookup)
    except di_errors.Error:
        raise ConfigurationError(
            f"{name}: the option 'user_lookup_service' is required "
            "(an object with by_subject(subject))"
        ) from None
    require_methods(name, "user_lookup_service", lookup, "by_subject")
    try:
        settings: AuthRefreshSettings = container.settings()
        if settings.verify_token is None:
            verifier = await resolved(container.verifier)
            require_methods(name, "verify_token_service", verifier, "refresh_token")
        issuer = await resolved(container.issuer)
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
    extractor = await resolved(container.extractor)
    if not callable(extractor) or isinstance(extractor, type):
        raise ConfigurationError(
            f"{name}: 'jwt_from_request' is not an extractor; give a callable "
            "(request) -> token, e.g. ExtractJwt.from_auth_header_as_bearer_token()"
        )
    return settings, extractor


def check_sessions_guard(name: str, sessions_path: str, access_module: object) -> None:
    """The session routes take the caller from the application's ``AuthJwtModule``."""
    if access_module is None:
        raise ConfigurationError(
            f"{name}: the routes under {sessions_path} (sessions_path) authenticate the caller "
            "by the access token and need AuthJwtModule.for_root(...) on the same "
            "application: attach() it (or include its router before this registration's)"
        )


def check_routes(routes: Sequence[BaseRoute]) -> None:
    """No route of an auth module shares its path and a method with another route: only the
    first of them would ever answer."""
    first: dict[tuple[str, str], tuple[Any, str | None]] = {}
    for route in iter_route_contexts(routes):
        path, endpoint = route.path, route.endpoint
        if path is None or endpoint is None:
            continue
        owner = _owner_of(endpoint)
        for method in sorted(route.methods or ()):
            earlier, earlier_owner = first.setdefault((path, method), (endpoint, owner))
            if earlier == endpoint or (owner is None and earlier_owner is None):
                continue
            raise ConfigurationError(
                f"{method} {path} is routed twice, by {_named(earlier, earlier_owner)} and by "
                f"{_named(endpoint, owner)}: only the first ever answers; give the second "
                "its own path (path=...)"
            )


def _owner_of(endpoint: Any) -> str | None:
    # The registration whose route this is (its handlers are bound methods), or None.
    owner = getattr(endpoint, "__self__", None)
    if isinstance(owner, SessionRoutes):
        owner = owner.flow
    if isinstance(owner, RefreshFlow):
        return owner.name
    name, kind = getattr(owner, "name", None), getattr(owner, "kind", None)
    return name if isinstance(name, str) and isinstance(kind, str) else None


def _named(endpoint: Any, owner: str | None) -> str:
    if owner is not None:
        return owner
    return f"the application's {getattr(endpoint, '__qualname__', repr(endpoint))}()"


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
