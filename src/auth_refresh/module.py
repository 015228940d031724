"""``AuthRefreshModule``: the registration API of the original, for FastAPI.

* ``for_root(...)``: the global registration; unqualified guards use it.
* ``register(...)``: one feature with its own container; what it does not set, it takes from
  the global registration when there is one.
* ``for_root_async`` / ``register_async``: options from a factory run once at startup.
* ``for_feature(...)``: a feature of the global registration; no route of its own by default.

Options become overrides on the module's ``AuthRefreshContainer``; a service resolves as the
feature's own override, then the option, then the global registration, then the default.

With rotation (``AUTH_REFRESH_ROTATION``, on by default) a refresh consumes the presented token
in the store and answers with its successor; a login module given
``module.login_issue_token_service`` starts a token family per login; ``logout_path`` (e.g.
``"/auth/logout"``) adds a route that revokes the presented token's family.
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
from starlette.responses import Response

from auth_refresh._utils import MaybeAwaitable, is_active, resolve, user_id_of
from auth_refresh.application import AppRegistry
from auth_refresh.authentication import (
    IssueTokenServiceInterface,
    TokenPair,
    VerifyTokenServiceInterface,
)
from auth_refresh.container import AuthRefreshContainer
from auth_refresh.cookies import CookieTransport, csrf_keys_of
from auth_refresh.exceptions import (
    AuthRefreshError,
    ConfigurationError,
    InvalidTokenError,
    MissingTokenError,
)
from auth_refresh.extractors import Extractor
from auth_refresh.guard import AuthRefreshGuard
from auth_refresh.responses import (
    COOKIE_ANSWER,
    NO_STORE,
    SET_COOKIE,
    CookieTokenBody,
    error_responses,
    token_response,
)
from auth_refresh.rotation import TokenRotationService, family_of, refuse_unjudgeable
from auth_refresh.routing import refresh_router
from auth_refresh.settings import AuthRefreshSettings, build_settings
from auth_refresh.store import RefreshTokenStore

__all__ = [
    "AuthRefreshModule",
    "AuthRefreshOptions",
    "AuthRefreshOptionsFactory",
    "AuthRefreshUserLookupServiceInterface",
    "LoginIssueTokenService",
]

DEFAULT_PATH = "/auth/refresh"
KIND = "auth_refresh"

log = logging.getLogger("auth_refresh")
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
_INHERITED = ("settings", "verifier", "issuer", "user_lookup", "clock")


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
        logout_path: str | None = None,
        needs_global: bool = False,
    ) -> None:
        self.name = name
        self.is_global = is_global
        self.controllers = controllers
        self.path = path
        self.logout_path = logout_path
        # The refresh cookie goes only where it is needed.
        self._cookie_paths = tuple(p for p in (path, logout_path) if p is not None)
        self.container = AuthRefreshContainer()
        self.guard = AuthRefreshGuard(self)
        # Routes of other modules that answer in this module's transport (a login route).
        self._answering_routes: list[APIRoute] = []
        self.login_issue_token_service = LoginIssueTokenService(self)
        self._factory = factory
        self._inject = tuple(inject)
        self._needs_global = needs_global
        self._started = False
        self._owned_store: RefreshTokenStore | None = None
        self._option_providers: set[str] = set()
        for provider in self._inject:
            if not isinstance(provider, providers.Provider):
                raise ConfigurationError(
                    f"{name}: 'inject' takes dependency-injector providers, got {provider!r}"
                )
        if options is not None:
            self._apply(options)
        self.router: APIRouter | None = None
        self._routes: list[APIRoute] = []
        if controllers or logout_path is not None:
            self.router, self._routes = refresh_router(self)

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
        logout_path: str | None = None,
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
            logout_path=logout_path,
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
        logout_path: str | None = None,
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
            logout_path=logout_path,
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
        logout_path: str | None = None,
    ) -> AuthRefreshModule:
        """The global registration, its options made at startup by ``factory(*inject)``."""
        return cls(
            name="AuthRefreshModule.for_root_async",
            is_global=True,
            factory=_options_factory("AuthRefreshModule.for_root_async", factory, use_class),
            inject=inject,
            controllers=controllers,
            path=path,
            logout_path=logout_path,
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
        logout_path: str | None = None,
    ) -> AuthRefreshModule:
        """One feature's registration, its options made at startup by ``factory(*inject)``."""
        return cls(
            name="AuthRefreshModule.register_async",
            is_global=False,
            factory=_options_factory("AuthRefreshModule.register_async", factory, use_class),
            inject=inject,
            controllers=controllers,
            path=path,
            logout_path=logout_path,
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
        logout_path: str | None = None,
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
            logout_path=logout_path,
            needs_global=True,
        )

    # -- application wiring ------------------------------------------------------------------

    def attach(self, app: FastAPI) -> None:
        """Add this module's routes, the error handler, its startup and shutdown to ``app``."""
        AppRegistry.install(app).add(self, KIND)
        if self.router is not None:
            app.include_router(self.router)

    async def startup(self, registry: AppRegistry | None) -> None:
        """Resolve async options, inherit from the global module, check every provider."""
        if not self._started:
            if self._factory is not None:
                self._apply(await self._run_factory())
            self._inherit(registry)
            self._check()
            self._started = True
        self._open_store()

    async def shutdown(self) -> None:
        """Close the store this module opened (not one it inherited or was given)."""
        store, self._owned_store = self._owned_store, None
        if store is not None:
            self.container.store.reset()
            await store.close()

    def _start_without_lifespan(self, app: Any) -> None:
        if self._factory is not None:
            raise RuntimeError(
                f"{self.name}: the options are made at application startup, but the "
                "application's lifespan has not run"
            )
        self._inherit(AppRegistry.of(app))
        self._check()
        self._started = True
        self._open_store()

    # -- per request -------------------------------------------------------------------------

    async def authenticate(self, request: Request) -> Any:
        """The user the request's refresh token names; raises a 401 error otherwise.

        With rotation, this consumes the token: its successor pair is kept on the request for
        ``issue(user, request)``.
        """
        if not self._started:
            self._start_without_lifespan(request.app)
        container = self.container
        arrived_at: float = container.clock()()
        settings: AuthRefreshSettings = container.settings()
        claims = await self._verified_claims(request)
        subject: str = claims["sub"]
        refuse_unjudgeable(claims, rotation=settings.rotation)
        if settings.rotation:
            # Before the user lookup: a replayed token revokes its family whoever it names.
            pair = await container.rotation().rotate(claims, arrived_at=arrived_at)
            _successors(request)[self] = pair
        user = await resolve(container.user_lookup().by_subject(subject))
        if user is None:
            security_log.info("refresh token refused: unknown subject")
            raise InvalidTokenError(reason="unknown_subject")
        if not is_active(user):
            security_log.info("refresh token refused: inactive user")
            raise InvalidTokenError(reason="inactive_user")
        return user

    async def issue(self, user: Any, request: Request | None = None) -> TokenPair:
        """The token pair to answer ``user`` with.

        For a request this module authenticated with rotation on, that is the successor pair of
        the token it consumed; otherwise a new pair (with rotation, the first of a new family).
        """
        if request is not None:
            pair = _successors(request).get(self)
            if pair is not None:
                return pair
        return await self.issue_for_subject(user_id_of(user))

    async def issue_for_subject(self, subject: str) -> TokenPair:
        """A new pair for ``subject``; with rotation, the first of a new token family."""
        if not self._started:
            self._start_without_lifespan(None)
        container = self.container
        if container.settings().rotation:
            return await container.rotation().start_family(subject)
        pair: TokenPair = await resolve(container.issuer().response_payload(subject))
        return pair

    async def logout(self, request: Request) -> None:
        """Revoke the family of the request's refresh token (``POST /auth/logout``)."""
        if not self._started:
            self._start_without_lifespan(request.app)
        claims = await self._verified_claims(request)
        await self.revoke_family(family_of(claims))

    def token_response(self, pair: TokenPair) -> Response:
        """The answer carrying ``pair``: JSON, or the refresh cookie with cookie transport."""
        transport = self._cookie_transport(self.container.settings())
        if transport is None:
            return token_response(pair)
        return transport.token_response(pair)

    def logout_response(self) -> Response:
        """The answer to a logout: 204, clearing the refresh cookie with cookie transport."""
        response = Response(status_code=204, headers=NO_STORE)
        transport = self._cookie_transport(self.container.settings())
        return response if transport is None else transport.clear(response)

    def _cookie_transport(self, settings: AuthRefreshSettings) -> CookieTransport | None:
        if not settings.cookie_transport:
            return None
        keys = csrf_keys_of(self.container)
        return CookieTransport.from_settings(settings, self._cookie_paths, keys)

    async def revoke_family(self, family_id: str) -> None:
        """Refuse every refresh token of one token family from now on (one session)."""
        await self._rotation("revoke_family").revoke_family(family_id)

    async def revoke_subject(self, subject: str) -> None:
        """Revoke every family of ``subject``: log out everywhere (password change, disabled
        account). Logins after this start new families as usual."""
        await self._rotation("revoke_subject").revoke_subject(subject)

    def check_request(self, request: Request) -> None:
        """Refuse, before any work, a request this module's transport must not answer: with
        cookie transport, one a browser marks as cross-site."""
        if not self._started:
            self._start_without_lifespan(request.app)
        self._checked_transport(request, self.container.settings())

    def _checked_transport(
        self, request: Request, settings: AuthRefreshSettings
    ) -> CookieTransport | None:
        # The cookie transport, once the request is known not to be a cross-site one.
        transport = self._cookie_transport(settings)
        if transport is not None:
            transport.refuse_cross_site(request)
        return transport

    async def _verified_claims(self, request: Request) -> Mapping[str, Any]:
        # Extract and verify: no I/O but what custom extractors or verify_token do.
        container = self.container
        settings: AuthRefreshSettings = container.settings()
        transport = self._checked_transport(request, settings)
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
        if transport is not None and transport.came_from_cookie(request, token):
            # The browser sends the cookie on its own: only the page can add the header.
            # Checked after the signature (no I/O) and before any store step.
            transport.check_csrf(request, token, claims)
        verified: Mapping[str, Any] = claims
        return verified

    def _rotation(self, operation: str) -> TokenRotationService:
        if not self._started:
            self._start_without_lifespan(None)
        if not self.container.settings().rotation:
            raise ConfigurationError(
                f"{self.name}: {operation} needs rotation; AUTH_REFRESH_ROTATION is false"
            )
        rotation: TokenRotationService = self.container.rotation()
        return rotation

    def _open_store(self) -> None:
        # Opened at startup so a bad URL fails there; the connection itself is made on first use.
        container = self.container
        if not container.settings().rotation or self._owned_store is not None:
            return
        try:
            store = container.store()
        except ConfigurationError as error:
            raise ConfigurationError(f"{self.name}: {error.message}") from None
        if not container.store.overridden:
            self._owned_store = store

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
            name = _OPTION_PROVIDERS[field.name]
            self._option_providers.add(name)
            # Options made at startup go under overrides a test made before it.
            _override_under(getattr(self.container, name), providers.Object(value))

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
        # Only what this module's options left alone; overrides made before startup (tests)
        # stay on top of what is inherited.
        for name in _INHERITED:
            if name not in self._option_providers:
                _override_under(getattr(self.container, name), getattr(root.container, name))
                if name == "settings":
                    _override_under(self.container.extractor, root.container.extractor)
        # One URL, one store: a login through the global module starts families this module
        # must find, which for memory:// means the very same object.
        both = _settings_of(self, root)
        if both is None:
            return
        own, inherited = both
        if own.store_url == inherited.store_url:
            _override_under(self.container.store, root.container.store)
        elif own.rotation and inherited.rotation:
            # Often meant (a feature with families of its own), but also what a feature gets
            # whose settings leave store_url to the environment while the global sets it in code.
            log.warning(
                "%s: its store_url is not the global registration's: a pair issued through "
                "one is unknown to the other, whose refresh route answers it with a 401",
                self.name,
            )

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
        if settings.rotation:
            _require_method(self.name, "issue_token_service", issuer, "access_token")
            _require_method(self.name, "issue_token_service", issuer, "refresh_token")
        elif self.logout_path is not None:
            raise ConfigurationError(
                f"{self.name}: POST {self.logout_path} needs rotation (AUTH_REFRESH_ROTATION): "
                "a stateless refresh token cannot be revoked"
            )
        else:
            log.warning(
                "%s: AUTH_REFRESH_ROTATION is false: refresh tokens are stateless and can be "
                "replayed until they expire; reuse detection and revocation are off",
                self.name,
            )
        if settings.cookie_transport and not settings.cookie_secure:
            log.warning(
                "%s: AUTH_REFRESH_COOKIE_SECURE is false: the refresh cookie may travel over "
                "plain http; only for localhost development",
                self.name,
            )
        extractor = container.extractor()
        if not callable(extractor):
            raise ConfigurationError(f"{self.name}: settings.jwt_from_request is not callable")
        self._describe_routes(extractor, self._cookie_transport(settings))

    def _describe_routes(self, extractor: Any, transport: CookieTransport | None) -> None:
        # A custom extractor says nothing of where it looks: claim no request body then.
        described = extractor.openapi() if isinstance(extractor, Extractor) else {}
        if transport is not None:
            parameters = [*described.get("parameters", ()), transport.csrf_parameter()]
            described = {**described, "parameters": parameters}
        for route in self._routes:
            route.openapi_extra = described
        if transport is None:
            return
        answer = {"model": CookieTokenBody, "description": COOKIE_ANSWER, "headers": SET_COOKIE}
        for route in [*self._routes, *self._answering_routes]:
            route.responses = {**route.responses, **error_responses(403)}
            if route.path != self.logout_path:
                route.responses[200] = answer


class LoginIssueTokenService:
    """The issue service to give a login module (``module.login_issue_token_service``).

    Each login's pair comes from the refresh module: with rotation, the first pair of a new
    token family in the store the refresh route uses.
    """

    def __init__(self, module: AuthRefreshModule) -> None:
        self.module = module

    def access_token(self, payload: Mapping[str, Any]) -> MaybeAwaitable[str]:
        token: MaybeAwaitable[str] = self.module.container.issuer().access_token(payload)
        return token

    def refresh_token(self, payload: Mapping[str, Any]) -> MaybeAwaitable[str]:
        token: MaybeAwaitable[str] = self.module.container.issuer().refresh_token(payload)
        return token

    async def response_payload(self, user_id: str) -> TokenPair:
        return await self.module.issue_for_subject(user_id)

    def check_request(self, request: Request) -> None:
        """Refuse a login the refresh module's transport must not answer (cross-site, with
        cookie transport)."""
        self.module.check_request(request)

    def describe_route(self, route: APIRoute) -> None:
        """Document ``route``'s answer in the refresh module's transport, at its startup."""
        self.module._answering_routes.append(route)

    def token_response(self, pair: TokenPair) -> Response:
        """The login answer, in the refresh module's transport (the cookie, when it is on)."""
        return self.module.token_response(pair)


def _successors(request: Request) -> dict[AuthRefreshModule, TokenPair]:
    # On the request's scope state: the guard and the route see the same request.
    successors: dict[AuthRefreshModule, TokenPair] | None = getattr(
        request.state, "auth_refresh_successors", None
    )
    if successors is None:
        successors = {}
        request.state.auth_refresh_successors = successors
    return successors


def _settings_of(
    module: AuthRefreshModule, root: AuthRefreshModule
) -> tuple[AuthRefreshSettings, AuthRefreshSettings] | None:
    try:
        return module.container.settings(), root.container.settings()
    except ConfigurationError:
        return None  # reported by _check with the module's name


def _override_under(provider: providers.Provider[Any], overriding: providers.Provider[Any]) -> None:
    """Override ``provider`` beneath the overrides it already has, which keep precedence."""
    above = provider.overridden
    for _ in above:
        provider.reset_last_overriding()
    provider.override(overriding)
    for override in above:
        provider.override(override)


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
