"""``AuthRefreshModule``: the registration API of the original, for FastAPI.

* ``for_root(...)``: the global registration; unqualified guards use it.
* ``register(...)``: one feature with its own container; what it does not set, it takes from
  the global registration when there is one.
* ``for_root_async`` / ``register_async``: options from a factory run once at startup.
* ``for_feature(...)``: a feature of the global registration; no route of its own by default.

Options become overrides on the module's ``AuthRefreshContainer``; a service resolves as the
feature's own override, then the option, then the global registration, then the default.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from dependency_injector import errors as di_errors
from dependency_injector import providers
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request

from auth_refresh._utils import MaybeAwaitable, resolve, user_id_of
from auth_refresh.application import AppRegistry
from auth_refresh.authentication import (
    IssueTokenServiceInterface,
    TokenPair,
    VerifyTokenServiceInterface,
)
from auth_refresh.container import AuthRefreshContainer
from auth_refresh.exceptions import (
    AuthRefreshError,
    ConfigurationError,
    InvalidTokenError,
    MissingTokenError,
)
from auth_refresh.extractors import Extractor
from auth_refresh.guard import AuthRefreshGuard
from auth_refresh.routing import refresh_router
from auth_refresh.settings import AuthRefreshSettings, build_settings

__all__ = [
    "AuthRefreshModule",
    "AuthRefreshOptions",
    "AuthRefreshOptionsFactory",
    "AuthRefreshUserLookupServiceInterface",
]

DEFAULT_PATH = "/auth/refresh"
KIND = "auth_refresh"

security_log = logging.getLogger("auth_refresh.security")


class AuthRefreshUserLookupServiceInterface(Protocol):
    """Finds the user a token's subject names; None when there is none."""

    def by_subject(self, subject: str) -> MaybeAwaitable[Any | None]: ...


@dataclass(frozen=True, kw_only=True)
class AuthRefreshOptions:
    """What a registration (or an options factory) provides; None keeps the inherited value."""

    user_lookup_service: AuthRefreshUserLookupServiceInterface | None = None
    issue_token_service: IssueTokenServiceInterface | None = None
    verify_token_service: VerifyTokenServiceInterface | None = None
    settings: AuthRefreshSettings | Mapping[str, Any] | None = None


class AuthRefreshOptionsFactory(Protocol):
    """For ``use_class``: built with the ``inject`` values, ``create()`` gives the options."""

    def create(self) -> MaybeAwaitable[AuthRefreshOptions | Mapping[str, Any]]: ...


OptionsFactory = Callable[..., MaybeAwaitable[AuthRefreshOptions | Mapping[str, Any]]]

# Which provider each option overrides.
_OPTION_PROVIDERS = {
    "user_lookup_service": "user_lookup",
    "issue_token_service": "issuer",
    "verify_token_service": "verifier",
    "settings": "settings",
}
# What a non-global module takes from the global one when it does not set it itself.
_INHERITED = ("settings", "verifier", "issuer", "user_lookup")


class AuthRefreshModule:
    """One refresh registration: a container, a guard and (unless disabled) a route."""

    def __init__(
        self,
        *,
        name: str,
        is_global: bool,
        options: AuthRefreshOptions | Mapping[str, Any] | None = None,
        factory: OptionsFactory | None = None,
        inject: Sequence[providers.Provider[Any]] = (),
        controllers: bool = True,
        path: str = DEFAULT_PATH,
        needs_global: bool = False,
    ) -> None:
        self.name = name
        self.is_global = is_global
        self.controllers = controllers
        self.path = path
        self.container = AuthRefreshContainer()
        self.guard = AuthRefreshGuard(self)
        self._factory = factory
        self._inject = tuple(inject)
        self._needs_global = needs_global
        self._started = False
        for provider in self._inject:
            if not isinstance(provider, providers.Provider):
                raise ConfigurationError(
                    f"{name}: 'inject' takes dependency-injector providers, got {provider!r}"
                )
        if options is not None:
            self._apply(options)
        self.router: APIRouter | None = None
        self._route: APIRoute | None = None
        if controllers:
            self.router, self._route = refresh_router(self)

    # -- registration ------------------------------------------------------------------------

    @classmethod
    def for_root(
        cls,
        *,
        user_lookup_service: AuthRefreshUserLookupServiceInterface | None = None,
        issue_token_service: IssueTokenServiceInterface | None = None,
        verify_token_service: VerifyTokenServiceInterface | None = None,
        settings: AuthRefreshSettings | Mapping[str, Any] | None = None,
        controllers: bool = True,
        path: str = DEFAULT_PATH,
    ) -> AuthRefreshModule:
        """The global registration: unqualified ``AuthRefreshGuard()`` uses it."""
        return cls(
            name="AuthRefreshModule.for_root",
            is_global=True,
            options=AuthRefreshOptions(
                user_lookup_service=user_lookup_service,
                issue_token_service=issue_token_service,
                verify_token_service=verify_token_service,
                settings=settings,
            ),
            controllers=controllers,
            path=path,
        )

    @classmethod
    def register(
        cls,
        *,
        user_lookup_service: AuthRefreshUserLookupServiceInterface | None = None,
        issue_token_service: IssueTokenServiceInterface | None = None,
        verify_token_service: VerifyTokenServiceInterface | None = None,
        settings: AuthRefreshSettings | Mapping[str, Any] | None = None,
        controllers: bool = True,
        path: str = DEFAULT_PATH,
    ) -> AuthRefreshModule:
        """One feature's registration, inheriting what it does not set from the global one."""
        return cls(
            name="AuthRefreshModule.register",
            is_global=False,
            options=AuthRefreshOptions(
                user_lookup_service=user_lookup_service,
                issue_token_service=issue_token_service,
                verify_token_service=verify_token_service,
                settings=settings,
            ),
            controllers=controllers,
            path=path,
        )

    @classmethod
    def for_root_async(
        cls,
        *,
        factory: OptionsFactory | None = None,
        use_class: type[AuthRefreshOptionsFactory] | None = None,
        inject: Sequence[providers.Provider[Any]] = (),
        controllers: bool = True,
        path: str = DEFAULT_PATH,
    ) -> AuthRefreshModule:
        """The global registration, its options made at startup by ``factory(*inject)``."""
        return cls(
            name="AuthRefreshModule.for_root_async",
            is_global=True,
            factory=_options_factory("AuthRefreshModule.for_root_async", factory, use_class),
            inject=inject,
            controllers=controllers,
            path=path,
        )

    @classmethod
    def register_async(
        cls,
        *,
        factory: OptionsFactory | None = None,
        use_class: type[AuthRefreshOptionsFactory] | None = None,
        inject: Sequence[providers.Provider[Any]] = (),
        controllers: bool = True,
        path: str = DEFAULT_PATH,
    ) -> AuthRefreshModule:
        """One feature's registration, its options made at startup by ``factory(*inject)``."""
        return cls(
            name="AuthRefreshModule.register_async",
            is_global=False,
            factory=_options_factory("AuthRefreshModule.register_async", factory, use_class),
            inject=inject,
            controllers=controllers,
            path=path,
        )

    @classmethod
    def for_feature(
        cls,
        *,
        user_lookup_service: AuthRefreshUserLookupServiceInterface | None = None,
        issue_token_service: IssueTokenServiceInterface | None = None,
        verify_token_service: VerifyTokenServiceInterface | None = None,
        settings: AuthRefreshSettings | Mapping[str, Any] | None = None,
        controllers: bool = False,
        path: str = DEFAULT_PATH,
    ) -> AuthRefreshModule:
        """A feature of the global registration: overrides some providers, inherits the rest.

        Unlike ``register``, it requires a global registration on the same application.
        """
        return cls(
            name="AuthRefreshModule.for_feature",
            is_global=False,
            options=AuthRefreshOptions(
                user_lookup_service=user_lookup_service,
                issue_token_service=issue_token_service,
                verify_token_service=verify_token_service,
                settings=settings,
            ),
            controllers=controllers,
            path=path,
            needs_global=True,
        )

    # -- application wiring ------------------------------------------------------------------

    def attach(self, app: FastAPI) -> None:
        """Add this module's route, the error handler and its startup to ``app``."""
        AppRegistry.install(app).add(self, KIND)
        if self.router is not None:
            app.include_router(self.router)

    async def startup(self, registry: AppRegistry | None) -> None:
        """Resolve async options, inherit from the global module, check every provider."""
        if self._started:
            return
        if self._factory is not None:
            self._apply(await self._run_factory())
        self._inherit(registry)
        self._check()
        self._started = True

    def _start_without_lifespan(self, app: Any) -> None:
        if self._factory is not None:
            raise RuntimeError(
                f"{self.name}: the options are made at application startup, but the "
                "application's lifespan has not run"
            )
        self._inherit(AppRegistry.of(app))
        self._check()
        self._started = True

    # -- per request -------------------------------------------------------------------------

    async def authenticate(self, request: Request) -> Any:
        """The user the request's refresh token names; raises a 401 error otherwise."""
        if not self._started:
            self._start_without_lifespan(request.app)
        container = self.container
        settings: AuthRefreshSettings = container.settings()
        token = await resolve(container.extractor()(request))
        if not isinstance(token, str) or not token:
            raise MissingTokenError()
        verify = settings.verify_token or container.verifier().refresh_token
        try:
            claims = await resolve(verify(token))
        except AuthRefreshError:
            raise
        except Exception as error:
            # The verify_token contract: raising means the token is invalid.
            security_log.info("refresh token refused by verify_token: %s", type(error).__name__)
            raise InvalidTokenError(reason="verify_token_failed") from None
        subject = claims.get("sub") if isinstance(claims, Mapping) else None
        if not isinstance(subject, str) or not subject:
            security_log.info("refresh token refused: no subject")
            raise InvalidTokenError(reason="no_subject")
        user = await resolve(container.user_lookup().by_subject(subject))
        if user is None:
            security_log.info("refresh token refused: unknown subject")
            raise InvalidTokenError(reason="unknown_subject")
        return user

    async def issue(self, user: Any) -> TokenPair:
        """The new token pair for ``user``."""
        pair: TokenPair = await resolve(self.container.issuer().response_payload(user_id_of(user)))
        return pair

    # -- internals ---------------------------------------------------------------------------

    def _apply(self, options: AuthRefreshOptions | Mapping[str, Any]) -> None:
        if isinstance(options, Mapping):
            unknown = sorted(set(options) - set(_OPTION_PROVIDERS))
            if unknown:
                known = ", ".join(_OPTION_PROVIDERS)
                raise ConfigurationError(
                    f"{self.name}: unknown options {unknown}; the options are {known}"
                )
            options = AuthRefreshOptions(**options)
        if not isinstance(options, AuthRefreshOptions):
            raise ConfigurationError(f"{self.name}: the options factory returned {options!r}")
        for field in dataclasses.fields(options):
            value = getattr(options, field.name)
            if value is None:
                continue
            if field.name == "settings":
                value = self._settings(value)
            getattr(self.container, _OPTION_PROVIDERS[field.name]).override(providers.Object(value))

    def _settings(self, given: AuthRefreshSettings | Mapping[str, Any]) -> AuthRefreshSettings:
        try:
            return build_settings(AuthRefreshSettings, given)
        except ConfigurationError as error:
            raise ConfigurationError(f"{self.name}: {error.message}") from None

    async def _run_factory(self) -> AuthRefreshOptions | Mapping[str, Any]:
        assert self._factory is not None
        try:
            values = [await resolve(provider()) for provider in self._inject]
            return await resolve(self._factory(*values))
        except Exception as error:
            raise ConfigurationError(
                f"{self.name}: the options factory failed: {type(error).__name__}: {error}"
            ) from error

    def _inherit(self, registry: AppRegistry | None) -> None:
        root: AuthRefreshModule | None = None
        if not self.is_global and registry is not None:
            root = registry.root(KIND)
        if root is None:
            if self._needs_global:
                raise ConfigurationError(
                    f"{self.name}: needs AuthRefreshModule.for_root(...) or for_root_async(...) "
                    "attached to the same application"
                )
            return
        # Only what this module left alone: its options and earlier overrides stay on top.
        for name in _INHERITED:
            provider = getattr(self.container, name)
            if not provider.overridden:
                provider.override(getattr(root.container, name))
                if name == "settings" and not self.container.extractor.overridden:
                    self.container.extractor.override(root.container.extractor)

    def _check(self) -> None:
        container = self.container
        try:
            lookup = container.user_lookup()
        except di_errors.Error:
            raise ConfigurationError(
                f"{self.name}: the option 'user_lookup_service' is required "
                "(an object with by_subject(subject))"
            ) from None
        _require_method(self.name, "user_lookup_service", lookup, "by_subject")
        try:
            settings: AuthRefreshSettings = container.settings()
            if settings.verify_token is None:
                verifier = container.verifier()
                _require_method(self.name, "verify_token_service", verifier, "refresh_token")
            issuer = container.issuer()
        except ConfigurationError as error:
            if error.message.startswith(self.name):
                raise
            raise ConfigurationError(f"{self.name}: {error.message}") from None
        _require_method(self.name, "issue_token_service", issuer, "response_payload")
        extractor = container.extractor()
        if not callable(extractor):
            raise ConfigurationError(f"{self.name}: settings.jwt_from_request is not callable")
        if self._route is not None and isinstance(extractor, Extractor):
            self._route.openapi_extra = extractor.openapi()


def _require_method(name: str, option: str, service: Any, method: str) -> None:
    if not callable(getattr(service, method, None)):
        raise ConfigurationError(f"{name}: the option '{option}' has no method {method}()")


def _options_factory(
    name: str, factory: OptionsFactory | None, use_class: type[AuthRefreshOptionsFactory] | None
) -> OptionsFactory:
    if (factory is None) == (use_class is None):
        raise ConfigurationError(f"{name}: give exactly one of 'factory' and 'use_class'")
    if factory is not None:
        return factory
    assert use_class is not None
    options_class = use_class

    def create(*values: Any) -> MaybeAwaitable[AuthRefreshOptions | Mapping[str, Any]]:
        return options_class(*values).create()

    return create
