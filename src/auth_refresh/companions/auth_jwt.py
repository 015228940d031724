"""The ``AuthJwtModule`` companion: a guard for routes that need an access token.

Like the refresh module, its registration's values are the defaults of its container's
providers (``user_lookup``, ``verifier``, ``extractor``), beneath the overrides tests make; a
value given as a dependency-injector provider (async ones included) is the default itself.

An access token naming its session (``sid``, issued with rotation) is refused once that session
is revoked: the application's global refresh registration (``for_root``) answers from its
per-process session cache (``stores/session_cache.py``). Without one on the application, or for a
token without ``sid``, no session is checked.
"""

from __future__ import annotations

from typing import Any

from dependency_injector import containers, providers
from dependency_injector import errors as di_errors
from fastapi import APIRouter
from fastapi.security.base import SecurityBase
from starlette.requests import Request

from auth_refresh.companions.authentication import AuthenticationModule
from auth_refresh.exceptions import ConfigurationError
from auth_refresh.flows.guards import AccessFlow, AppFlows, AuthJwtGuard
from auth_refresh.registration.application import (
    AppRegistry,
    discoverable,
    module_lifespan,
    require_application,
    start_late,
)
from auth_refresh.registration.checks import refuse_class, require_methods, resolved
from auth_refresh.transport.extractors import AuthHeaderSchemeExtractor, TokenExtractor
from auth_refresh.types import AuthJwtUserLookupServiceInterface, VerifyTokenServiceInterface

__all__ = ["AuthJwtContainer", "AuthJwtModule"]

KIND = "auth_jwt"


def _default_verifier() -> VerifyTokenServiceInterface:
    return AuthenticationModule.for_root().verify_token_service


class AuthJwtContainer(containers.DeclarativeContainer):
    """Providers of one access-token registration; tests override them on the instance.

    ``verifier`` defaults to ``AuthenticationModule``'s (``JWT_MODULE_*``); ``extractor`` to
    ``Authorization: Bearer <token>``; ``user_lookup`` has no default.
    """

    user_lookup: providers.Dependency[Any] = providers.Dependency()
    verifier: providers.Dependency[Any] = providers.Dependency(
        default=providers.ThreadSafeSingleton(_default_verifier)
    )
    extractor: providers.Dependency[Any] = providers.Dependency(
        default=providers.Object(AuthHeaderSchemeExtractor("bearer"))
    )


class AuthJwtModule:
    """Access-token authentication: ``Authorization: Bearer <access token>`` by default."""

    kind = KIND
    is_global = True

    def __init__(
        self,
        user_lookup_service: AuthJwtUserLookupServiceInterface | providers.Provider[Any],
        verify_token_service: VerifyTokenServiceInterface | providers.Provider[Any] | None = None,
        jwt_from_request: TokenExtractor | providers.Provider[Any] | None = None,
    ) -> None:
        self.name = "AuthJwtModule.for_root"
        self.container = AuthJwtContainer()
        given = {
            "user_lookup": ("user_lookup_service", user_lookup_service),
            "verifier": ("verify_token_service", verify_token_service),
            "extractor": ("jwt_from_request", jwt_from_request),
        }
        for provider_name, (option, value) in given.items():
            if value is None:
                continue
            if not isinstance(value, providers.Provider):
                refuse_class(self.name, option, value)
                value = providers.Object(value)
            getattr(self.container, provider_name).set_default(value)
        self.flow = AccessFlow(self.container, self._start_late)
        self.security_schemes: dict[str, SecurityBase] = {}
        self.guard = AuthJwtGuard(self)
        self.router = APIRouter(lifespan=module_lifespan(self))
        self.route_name = discoverable(self, self.router, None)

    @classmethod
    def for_root(
        cls,
        *,
        user_lookup_service: AuthJwtUserLookupServiceInterface | providers.Provider[Any],
        verify_token_service: VerifyTokenServiceInterface | providers.Provider[Any] | None = None,
        jwt_from_request: TokenExtractor | providers.Provider[Any] | None = None,
    ) -> AuthJwtModule:
        """The verify service defaults to ``AuthenticationModule``'s (``JWT_MODULE_*`` env)."""
        if verify_token_service is None:
            # Made now, so missing JWT_MODULE_* settings fail the registration.
            verify_token_service = _default_verifier()
        return cls(user_lookup_service, verify_token_service, jwt_from_request)

    @property
    def started(self) -> bool:
        """Running: between startup and shutdown."""
        return self.flow.started

    @started.setter
    def started(self, value: bool) -> None:
        self.flow.started = value

    def publish(self, flows: AppFlows) -> None:
        """Unqualified ``AuthJwtGuard()`` uses this registration's flow."""
        flows.access = self.flow

    def attach(self, app: Any) -> None:
        """The same as ``app.include_router(module.router)``; unqualified guards know it
        before startup."""
        application = require_application(self.name, app)
        AppRegistry.install(application).add(self)
        application.include_router(self.router)

    async def startup(self, registry: AppRegistry | None) -> None:
        """Check every provider resolves to something usable."""
        container = self.container
        try:
            lookup = await resolved(container.user_lookup)
        except di_errors.Error:
            raise ConfigurationError(
                f"{self.name}: the option 'user_lookup_service' is required"
            ) from None
        require_methods(self.name, "user_lookup_service", lookup, "by_subject")
        try:
            verifier = await resolved(container.verifier)
        except ConfigurationError as error:
            raise ConfigurationError(f"{self.name}: {error.message}") from None
        require_methods(self.name, "verify_token_service", verifier, "access_token")
        if not callable(await resolved(container.extractor)):
            raise ConfigurationError(f"{self.name}: 'jwt_from_request' is not callable")
        self.started = True

    async def shutdown(self) -> None:
        self.started = False

    async def authenticate(self, request: Request) -> Any:
        """The user the request's access token names; raises a 401 error otherwise."""
        return await self.flow.authenticate(request)

    async def _start_late(self, app: Any) -> None:
        await start_late(self, app)
