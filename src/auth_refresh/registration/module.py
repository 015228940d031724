"""``AuthRefreshModule``: the registration API of the original, for FastAPI.

* ``for_root(...)``: the global registration; unqualified guards use it.
* ``register(...)``: one feature with its own container; what it does not set, it takes from
  the global registration when there is one.
* ``for_root_async`` / ``register_async``: options from a factory run at every startup of the
  application.
* ``for_feature(...)``: a feature of the global registration; no route of its own by default.

A registration's values sit beneath the overrides tests make (``options.py``); startup checks
are in ``checks.py``, OpenAPI in ``openapi.py``. The module registers and starts; its requests
are served by its ``RefreshFlow`` (``flows/refresh.py``), which the routes and guards call.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from dependency_injector import providers
from fastapi import APIRouter
from fastapi.routing import APIRoute
from fastapi.security.base import SecurityBase
from starlette.requests import Request
from starlette.responses import Response

from auth_refresh.exceptions import ConfigurationError
from auth_refresh.flows.guards import AppFlows, AuthJwtGuard, AuthRefreshGuard, session_active
from auth_refresh.flows.readiness import Readiness
from auth_refresh.flows.refresh import LoginIssueTokenService, RefreshFlow
from auth_refresh.registration.application import (
    AppRegistry,
    discoverable,
    module_lifespan,
    require_application,
    start_late,
)
from auth_refresh.registration.checks import check_registration, check_sessions_guard
from auth_refresh.registration.container import AuthRefreshContainer
from auth_refresh.registration.openapi import RefreshSource
from auth_refresh.registration.options import (
    ASYNC_REGISTRATION_OPTIONS,
    REGISTRATION_OPTIONS,
    AsyncRegistrationOptions,
    AuthRefreshOptions,
    OptionsFactory,
    RegistrationOptions,
    Routes,
    check_inject,
    options_factory,
    options_of,
    refuse_unknown_options,
    run_options_factory,
)
from auth_refresh.registration.routes import add_refresh_routes, refresh_router
from auth_refresh.registration.startup import (
    check_store_at_startup,
    global_registration,
    inherit_global,
    open_store,
)
from auth_refresh.registration.values import (
    registration_defaults,
    reset_registration_values,
    set_registration_values,
    settings_values,
)
from auth_refresh.stores.base import (
    SESSION_PAGE_MAX,
    RefreshTokenStore,
    SessionCursor,
    SessionRecord,
)
from auth_refresh.transport.paths import RoutedPaths
from auth_refresh.types import Refreshed, TokenPair

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["AuthRefreshModule"]

KIND = "auth_refresh"
# The access-token module's kind (companions.auth_jwt, which imports this module).
ACCESS_KIND = "auth_jwt"

log = logging.getLogger("auth_refresh")


DEFAULT_ROUTES = Routes()


class AuthRefreshModule:
    """One refresh registration: a container, a guard and a router (routes unless disabled)."""

    kind = KIND

    def __init__(
        self,
        name: str,
        *,
        is_global: bool,
        needs_global: bool = False,
        factory: OptionsFactory | None = None,
        inject: tuple[providers.Provider[Any], ...] = (),
        options: AuthRefreshOptions | None = None,
        routes: Routes = DEFAULT_ROUTES,
    ) -> None:
        self.name = name
        self.is_global = is_global
        self.routes = routes
        logout_path = routes.logout_path
        self.container = AuthRefreshContainer()
        # The refresh cookie goes only where it is needed: the routes, named to be found.
        names = (f"auth_refresh_refresh_{id(self):x}", f"auth_refresh_logout_{id(self):x}")
        self._route_names = names
        written = (routes.path, logout_path)
        paths = {n: p for n, p in zip(names, written, strict=True) if p is not None}
        self.flow = RefreshFlow(name, self.container, RoutedPaths(paths), self._start_late)
        self.guard = AuthRefreshGuard(self)
        self.login_issue_token_service = LoginIssueTokenService(
            self.flow, self.describe_answering_route
        )
        self._configured = False  # options made, inherited and checked: once
        self.security_schemes: dict[str, SecurityBase] = {}
        self._needs_global = needs_global
        self._factory = factory
        self._inject = inject
        self._own: set[str] = set()  # the providers this registration's options set
        self._own_settings: dict[str, Any] = {}  # the settings values they set
        self._defaults = registration_defaults(self.container)
        self._owned_store: RefreshTokenStore | None = None
        if options is not None:
            self._own = set_registration_values(name, self.container, options)
            self._own_settings = settings_values(options.settings)
        self.router: APIRouter
        self.router, token_routes = refresh_router(self.flow, module_lifespan(self), names, routes)
        found_by = names[0] if routes.controllers else names[1] if logout_path else None
        self.route_name = discoverable(self, self.router, found_by)
        # Where its routes and guard read the token, for OpenAPI: known at startup. Routes of
        # other modules may answer in its transport too (a login route).
        self.refresh_source = RefreshSource(
            reads={route.operation_id for route in token_routes if route.operation_id},
            answers={
                route.operation_id
                for route in token_routes
                if route.operation_id and route.path != logout_path
            },
        )

    # -- registration ------------------------------------------------------------------------

    @classmethod
    def for_root(cls, **options: Unpack[RegistrationOptions]) -> AuthRefreshModule:
        """The global registration: unqualified ``AuthRefreshGuard()`` uses it.

        The options: [`RegistrationOptions`][auth_refresh.RegistrationOptions]."""
        return cls._registered("AuthRefreshModule.for_root", options, is_global=True)

    @classmethod
    def register(cls, **options: Unpack[RegistrationOptions]) -> AuthRefreshModule:
        """One feature's registration, inheriting what it does not set from the global one.

        The options: [`RegistrationOptions`][auth_refresh.RegistrationOptions]."""
        return cls._registered("AuthRefreshModule.register", options, is_global=False)

    @classmethod
    def for_feature(cls, **options: Unpack[RegistrationOptions]) -> AuthRefreshModule:
        """A feature of the global registration (required on the same application): sets some
        providers, inherits the rest; no route unless ``controllers=True``.

        The options: [`RegistrationOptions`][auth_refresh.RegistrationOptions]."""
        return cls._registered(
            "AuthRefreshModule.for_feature",
            {"controllers": False, **options},
            is_global=False,
            needs_global=True,
        )

    @classmethod
    def for_root_async(cls, **options: Unpack[AsyncRegistrationOptions]) -> AuthRefreshModule:
        """The global registration, its options made at startup by ``factory(*inject)``.

        The options: [`AsyncRegistrationOptions`][auth_refresh.AsyncRegistrationOptions]."""
        return cls._registered_async("AuthRefreshModule.for_root_async", options, is_global=True)

    @classmethod
    def register_async(cls, **options: Unpack[AsyncRegistrationOptions]) -> AuthRefreshModule:
        """One feature's registration, its options made at startup by ``factory(*inject)``.

        The options: [`AsyncRegistrationOptions`][auth_refresh.AsyncRegistrationOptions]."""
        return cls._registered_async("AuthRefreshModule.register_async", options, is_global=False)

    @classmethod
    def _registered(
        cls,
        name: str,
        options: RegistrationOptions,
        *,
        is_global: bool,
        needs_global: bool = False,
    ) -> AuthRefreshModule:
        refuse_unknown_options(name, options, REGISTRATION_OPTIONS)
        routes = Routes.of(options)
        given = {key: value for key, value in options.items() if not hasattr(routes, key)}
        return cls(
            name,
            is_global=is_global,
            needs_global=needs_global,
            routes=routes,
            options=options_of(name, given),
        )

    @classmethod
    def _registered_async(
        cls, name: str, options: AsyncRegistrationOptions, *, is_global: bool
    ) -> AuthRefreshModule:
        refuse_unknown_options(name, options, ASYNC_REGISTRATION_OPTIONS)
        return cls(
            name,
            is_global=is_global,
            factory=options_factory(name, options.get("factory"), options.get("use_class")),
            inject=check_inject(name, options.get("inject", ())),
            routes=Routes.of(options),
        )

    # -- application wiring ------------------------------------------------------------------

    def publish(self, flows: AppFlows) -> None:
        """The global registration: unqualified guards and the access guard use its flow."""
        flows.refresh = self.flow

    def attach(self, app: Any) -> None:
        """Add this module to ``app``: the routes and lifespan of ``module.router``, the routes
        as the application's own (FastAPI routes a request to an included router's through one
        more step), and the module is known to unqualified guards before startup."""
        application = require_application(self.name, app)
        AppRegistry.install(application).add(self)
        add_refresh_routes(application.router, self.flow, self._route_names, self.routes)
        application.include_router(APIRouter(lifespan=module_lifespan(self)))

    async def startup(self, registry: AppRegistry | None) -> None:
        """Run the options factory (at every startup: its ``inject`` providers may be
        overridden in between), inherit from the global module, check, open the store."""
        if self.started:
            return
        if not self._configured or self._factory is not None:
            if self._factory is not None:
                made = await run_options_factory(self.name, self._factory, self._inject)
                options = options_of(self.name, made)
                # What the last run set and this one does not must not linger.
                reset_registration_values(self.container, self._defaults)
                self._own = set_registration_values(self.name, self.container, options)
                self._own_settings = settings_values(options.settings)
            inherited = inherit_global(
                self.name,
                self.container,
                global_registration(registry, KIND, is_global=self.is_global),
                needs_global=self._needs_global,
                own=self._own,
                own_settings=self._own_settings,
            )
            try:
                _, extractor = await check_registration(
                    self.name, self.container, self.routes.logout_path, self.routes.sessions_path
                )
            except ConfigurationError as error:
                if self.is_global or inherited:
                    raise
                raise ConfigurationError(
                    f"{error.message} (no global registration had joined the application when "
                    "it started: if there is one, include the global registration's router "
                    "first, or attach() both)"
                ) from None
            sessions_path = self.routes.sessions_path
            if sessions_path is not None and registry is not None:
                # A test may replace the access guard (dependency_overrides) instead.
                replaced = registry.app is not None and (
                    AuthJwtGuard() in registry.app.dependency_overrides
                )
                check_sessions_guard(
                    self.name, sessions_path, replaced or registry.root(ACCESS_KIND)
                )
            self.security_schemes = self.refresh_source.describe(extractor, self.flow.transport())
            self._configured = True
        settings = self.container.settings()
        self._owned_store = await open_store(self.name, self.container, settings, self._own)
        await check_store_at_startup(self.name, self.flow)
        self.started = True

    async def shutdown(self) -> None:
        """Close the store this registration opened or was given (not one it inherited, nor
        one a test set with ``container.store.override``)."""
        store, self._owned_store = self._owned_store, None
        self.started = False
        if store is None:
            return
        default = self.container.store.default
        if isinstance(default, providers.ThreadSafeSingleton):
            default.reset()  # opened from settings.store_url: the next startup opens another
        await store.close()

    # -- per request: the flow's walks, for routes the application writes ------------------

    @property
    def started(self) -> bool:
        """Running: between startup and shutdown."""
        return self.flow.started

    @started.setter
    def started(self, value: bool) -> None:
        self.flow.started = value

    async def refresh(self, request: Request) -> Refreshed:
        """The refresh walk for ``request``: the user and the pair."""
        return await self.flow.refresh(request)

    async def authenticate(self, request: Request) -> Any:
        """The user the request's refresh token names; raises a 401 error otherwise.

        With rotation this consumes the token: ``issue(user, request)`` gives its successor.
        """
        return await self.flow.authenticate(request)

    async def issue(self, user: Any, request: Request | None = None) -> TokenPair:
        """The token pair to answer ``user`` with.

        For a request this module authenticated with rotation on, that is the successor pair of
        the token it consumed; otherwise a new pair (with rotation, the first of a new family).
        """
        return await self.flow.issue(user, request)

    async def issue_for_subject(self, subject: str, request: Request | None = None) -> TokenPair:
        """A new pair for ``subject``; with rotation, the first of a new token family: a
        session, labelled with ``request``'s ``User-Agent`` (and client IP, if kept)."""
        return await self.flow.issue_for_subject(subject, request)

    async def logout(self, request: Request) -> None:
        """Revoke the family of the request's refresh token (``POST /auth/logout``)."""
        await self.flow.logout(request)

    def token_response(self, pair: TokenPair) -> Response:
        """The answer carrying ``pair``: JSON, or the refresh cookie with cookie transport."""
        return self.flow.token_response(pair)

    def logout_response(self) -> Response:
        """The answer to a logout: 204, clearing the refresh cookie with cookie transport."""
        return self.flow.logout_response()

    async def revoke_family(self, family_id: str) -> None:
        """Refuse every refresh token of one token family from now on (one session)."""
        await self.flow.sessions.revoke_family(family_id)

    async def revoke_subject(self, subject: str) -> int:
        """Revoke every family of ``subject``: log out everywhere (password change, disabled
        account); how many live sessions it ended. Logins after this start new families as
        usual."""
        return await self.flow.sessions.revoke_subject(subject)

    async def list_sessions(
        self, subject: str, *, limit: int = SESSION_PAGE_MAX, after: SessionCursor | None = None
    ) -> list[SessionRecord]:
        """At most ``limit`` (1 to 100) live sessions (token families) of ``subject``, newest
        first; pass ``SessionCursor.of(last)`` of a page's last session as ``after`` for the
        next page."""
        return await self.flow.sessions.list_sessions(subject, limit=limit, after=after)

    async def revoke_session(self, subject: str, session_id: str) -> None:
        """End one session of ``subject``: its refresh and access tokens stop working.
        ``SessionNotFoundError`` (404) unless it is one of ``subject``'s live sessions."""
        await self.flow.sessions.revoke_session(subject, session_id)

    async def revoke_other_sessions(self, subject: str, keep: str | None) -> int:
        """End every live session of ``subject`` but ``keep`` (the caller's); how many."""
        return await self.flow.sessions.revoke_other_sessions(subject, keep)

    async def session_active(self, session_id: str, subject: str) -> bool:
        """Whether the session an access token names is live (``AuthJwtGuard``'s check)."""
        return await session_active(self.flow, session_id, subject)

    async def readiness(self) -> Readiness:
        """Whether this registration can serve: its store answers within 2 s and holds this
        release's schema (``reason`` says why not)."""
        return await self.flow.readiness()

    def describe_answering_route(self, route: APIRoute) -> None:
        """Document another module's route (a login) as answering in this module's transport."""
        if route.operation_id:
            self.refresh_source.answers.add(route.operation_id)

    # -- internals ---------------------------------------------------------------------------

    async def _start_late(self, app: Any) -> None:
        await start_late(self, app)
