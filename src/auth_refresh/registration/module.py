"""``AuthRefreshModule``: the registration API of the original, for FastAPI.

* ``for_root(...)``: the global registration; unqualified guards use it.
* ``register(...)``: one feature with its own container; what it does not set, it takes from
  the global registration when there is one.
* ``for_root_async`` / ``register_async``: options from a factory run once at startup.
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
from auth_refresh.flows.guards import AppFlows, AuthRefreshGuard
from auth_refresh.flows.refresh import (
    LoginIssueTokenService,
    Refreshed,
    RefreshFlow,
)
from auth_refresh.registration.application import (
    AppRegistry,
    module_lifespan,
    require_application,
    start_late,
)
from auth_refresh.registration.checks import check_registration
from auth_refresh.registration.container import AuthRefreshContainer
from auth_refresh.registration.openapi import RefreshSource
from auth_refresh.registration.options import (
    ASYNC_REGISTRATION_OPTIONS,
    DEFAULT_PATH,
    REGISTRATION_OPTIONS,
    AsyncRegistrationOptions,
    AuthRefreshOptions,
    OptionsFactory,
    RegistrationOptions,
    check_inject,
    inherit_from_global,
    options_factory,
    options_of,
    refuse_unknown_options,
    run_options_factory,
    set_registration_values,
    share_global_store,
)
from auth_refresh.registration.routes import refresh_router
from auth_refresh.settings import AuthRefreshSettings
from auth_refresh.stores.base import RefreshTokenStore, SessionRecord
from auth_refresh.types import TokenPair

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["AuthRefreshModule"]

KIND = "auth_refresh"

log = logging.getLogger("auth_refresh")


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
        controllers: bool = True,
        path: str = DEFAULT_PATH,
        logout_path: str | None = None,
        sessions_path: str | None = None,
    ) -> None:
        self.name = name
        self.is_global = is_global
        self.controllers = controllers
        self.path = path
        self.logout_path = logout_path
        self.sessions_path = sessions_path
        self.container = AuthRefreshContainer()
        # The refresh cookie goes only where it is needed.
        cookie_paths = tuple(p for p in (path, logout_path) if p is not None)
        self.flow = RefreshFlow(name, self.container, cookie_paths, self._start_late)
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
        self._owned_store: RefreshTokenStore | None = None
        if options is not None:
            self._own = set_registration_values(name, self.container, options)
        self.router: APIRouter
        self.router, routes = refresh_router(
            self.flow,
            module_lifespan(self),
            controllers=controllers,
            path=path,
            logout_path=logout_path,
            sessions_path=sessions_path,
        )
        # Where its routes and guard read the token, for OpenAPI: known at startup. Routes of
        # other modules may answer in its transport too (a login route).
        self.refresh_source = RefreshSource(
            reads={route.operation_id for route in routes if route.operation_id},
            answers={
                route.operation_id
                for route in routes
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
        given: dict[str, Any] = dict(options)
        return cls(
            name,
            is_global=is_global,
            needs_global=needs_global,
            controllers=given.pop("controllers", True),
            path=given.pop("path", DEFAULT_PATH),
            logout_path=given.pop("logout_path", None),
            sessions_path=given.pop("sessions_path", None),
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
            controllers=options.get("controllers", True),
            path=options.get("path", DEFAULT_PATH),
            logout_path=options.get("logout_path"),
            sessions_path=options.get("sessions_path"),
        )

    # -- application wiring ------------------------------------------------------------------

    def publish(self, flows: AppFlows) -> None:
        """The global registration: unqualified guards and the access guard use its flow."""
        flows.refresh = self.flow

    def attach(self, app: Any) -> None:
        """Add this module to ``app``: the same as ``app.include_router(module.router)``, and
        the module is known to unqualified guards before startup."""
        application = require_application(self.name, app)
        AppRegistry.install(application).add(self)
        application.include_router(self.router)

    async def startup(self, registry: AppRegistry | None) -> None:
        """Run the options factory, inherit from the global module, check, open the store."""
        if self.started:
            return
        if not self._configured:
            if self._factory is not None:
                made = await run_options_factory(self.name, self._factory, self._inject)
                options = options_of(self.name, made)
                self._own = set_registration_values(self.name, self.container, options)
            inherited = self._inherit(registry)
            try:
                _, extractor = check_registration(
                    self.name, self.container, self.logout_path, self.sessions_path
                )
            except ConfigurationError as error:
                if self.is_global or inherited:
                    raise
                raise ConfigurationError(
                    f"{error.message} (no global registration had joined the application when "
                    "it started: if there is one, include the global registration's router "
                    "first, or attach() both)"
                ) from None
            self.security_schemes = self.refresh_source.describe(extractor, self.flow.transport())
            self._configured = True
        self._open_store(self.container.settings())
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
        await self.flow.revoke_family(family_id)

    async def revoke_subject(self, subject: str) -> None:
        """Revoke every family of ``subject``: log out everywhere (password change, disabled
        account). Logins after this start new families as usual."""
        await self.flow.revoke_subject(subject)

    async def list_sessions(self, subject: str) -> list[SessionRecord]:
        """The live sessions (token families) of ``subject``, newest first."""
        return await self.flow.list_sessions(subject)

    async def revoke_session(self, subject: str, session_id: str) -> None:
        """End one session of ``subject``: its refresh and access tokens stop working.
        ``SessionNotFoundError`` (404) unless it is one of ``subject``'s live sessions."""
        await self.flow.revoke_session(subject, session_id)

    async def revoke_other_sessions(self, subject: str, keep: str | None) -> int:
        """End every live session of ``subject`` but ``keep`` (the caller's); how many."""
        return await self.flow.revoke_other_sessions(subject, keep)

    async def session_active(self, session_id: str, subject: str) -> bool:
        """Whether the session an access token names is live (``AuthJwtGuard``'s check)."""
        return await self.flow.session_active(session_id, subject)

    def describe_answering_route(self, route: APIRoute) -> None:
        """Document another module's route (a login) as answering in this module's transport."""
        if route.operation_id:
            self.refresh_source.answers.add(route.operation_id)

    # -- internals ---------------------------------------------------------------------------

    async def _start_late(self, app: Any) -> None:
        await start_late(self, app)

    def _inherit(self, registry: AppRegistry | None) -> bool:
        # Whether there is a global registration to inherit from.
        root: AuthRefreshModule | None = None
        if not self.is_global and registry is not None:
            found = registry.root(KIND)
            root = found if isinstance(found, AuthRefreshModule) else None
        if root is None:
            if self._needs_global:
                raise ConfigurationError(
                    f"{self.name}: needs AuthRefreshModule.for_root(...) or for_root_async(...) "
                    "attached to the same application"
                )
            return False
        inherit_from_global(self.container, root.container, self._own)
        if "store" in self._own:
            return True
        try:
            own, inherited = self.container.settings(), root.container.settings()
        except ConfigurationError:
            return True  # reported by the checks with the module's name
        if own.store_url == inherited.store_url:
            share_global_store(self.container, root.container)
        elif own.rotation and inherited.rotation:
            # Often meant (a feature with families of its own), but also what a feature gets
            # whose settings leave store_url to the environment while the global sets it in code.
            log.warning(
                "%s: its store_url is not the global registration's: a pair issued through "
                "one is unknown to the other, whose refresh route answers it with a 401",
                self.name,
            )
        return True

    def _open_store(self, settings: AuthRefreshSettings) -> None:
        # Opened at startup so a bad URL fails there; the connection itself is made on first use.
        container = self.container
        if not settings.rotation or container.store.overridden:
            return  # a store a test set is the test's to close
        default = container.store.default
        try:
            store = container.store()
        except ConfigurationError as error:
            raise ConfigurationError(f"{self.name}: {error.message}") from None
        # Its own (given or from store_url), not the global registration's.
        if "store" in self._own or isinstance(default, providers.ThreadSafeSingleton):
            self._owned_store = store
