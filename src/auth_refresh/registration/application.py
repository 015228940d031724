"""The auth modules of one FastAPI application, and how they start.

Every module's router carries a lifespan, so ``app.include_router(module.router)`` and
``module.attach(app)`` are the same: on the application's startup (after its own lifespan has
entered, so option factories can use its resources) each module joins the application's
``AppRegistry`` (in ``app.state``), which installs the error handler and the OpenAPI additions
once and starts the modules, global registrations first.

Without a lifespan (an application mounted with ``app.mount()``, a ``TestClient`` used without
``with``, a bare ``httpx.ASGITransport``) the first request that needs a module starts it and
every other module included in the application: each module is findable by the name of one of
its routes (``discoverable``), the error handler is put in the middleware stack the request is
already in, and unqualified guards ask ``start_application`` for the global registrations.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from fastapi import APIRouter, FastAPI
from fastapi.security.base import SecurityBase
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import NoMatchFound
from starlette.websockets import WebSocket

from auth_refresh.exceptions import AuthRefreshError, ConfigurationError
from auth_refresh.flows.guards import APP_FLOWS, AppFlows, start_applications_with
from auth_refresh.registration.checks import check_routes
from auth_refresh.registration.openapi import install_openapi
from auth_refresh.transport.responses import error_response

__all__ = [
    "AppRegistry",
    "AttachableModule",
    "discoverable",
    "module_lifespan",
    "require_application",
    "start_application",
    "start_late",
]

# The refresh modules start first: the login and access modules may use them.
_STARTS_FIRST = "auth_refresh"


class AttachableModule(Protocol):
    name: str
    kind: str
    is_global: bool
    started: bool
    # The name of one of its routes, found in any application its router is included in.
    route_name: str
    security_schemes: dict[str, SecurityBase]

    async def startup(self, registry: AppRegistry | None) -> None: ...

    async def shutdown(self) -> None: ...

    def publish(self, flows: AppFlows) -> None:
        """As the application's global registration of its kind: hand its flow to the
        unqualified guards."""


class AppRegistry:
    """The auth modules of one application."""

    def __init__(self, app: FastAPI | None = None) -> None:
        self.app = app
        self.modules: list[AttachableModule] = []
        self.roots: dict[str, AttachableModule] = {}
        # What the request walks read (app.state): the global registrations' flows.
        self.flows = AppFlows()
        self.discovered = False  # the modules included without a lifespan: looked for once
        self._lock = asyncio.Lock()

    @classmethod
    def install(cls, app: FastAPI) -> AppRegistry:
        registry = cls.of(app)
        if registry is not None:
            return registry
        registry = cls(app)
        app.state.auth_refresh_registry = registry
        setattr(app.state, APP_FLOWS, registry.flows)
        _install_error_handler(app)
        install_openapi(app, registry.modules, registry.flows)
        return registry

    @staticmethod
    def of(app: Any) -> AppRegistry | None:
        registry = getattr(getattr(app, "state", None), "auth_refresh_registry", None)
        return registry if isinstance(registry, AppRegistry) else None

    def add(self, module: AttachableModule) -> None:
        """Add ``module`` (``attach``); attaching it twice is a mistake."""
        if module in self.modules:
            raise ConfigurationError(f"{module.name}: attached to the application already")
        self._join(module)

    def join(self, module: AttachableModule) -> None:
        """Add ``module`` unless it is here already (its router's lifespan)."""
        if module not in self.modules:
            self._join(module)

    def _join(self, module: AttachableModule) -> None:
        if module.is_global:
            if module.kind in self.roots:
                raise ConfigurationError(
                    f"{module.name}: a global {module.kind} module is attached already"
                )
            started_features = [
                other.name
                for other in self.modules
                if other.kind == module.kind and not other.is_global and other.started
            ]
            if started_features:
                raise ConfigurationError(
                    f"{module.name}: {', '.join(started_features)} started before it and "
                    "inherits nothing from it; include the global registration's router "
                    "before the features' routers (or attach() every module before startup)"
                )
            self.roots[module.kind] = module
            module.publish(self.flows)
            if module.kind == _STARTS_FIRST:
                # Companions that started before it (a login router included first) start
                # again beside it: a login module then issues through it.
                for other in self.modules:
                    if other.kind != _STARTS_FIRST:
                        other.started = False
        self.modules.append(module)

    def root(self, kind: str) -> AttachableModule | None:
        """The global module of ``kind``, or None."""
        return self.roots.get(kind)

    async def startup(self) -> None:
        """Start every module not started yet: refresh modules, global ones first; then check
        the application's routes (all in it before any lifespan runs)."""
        async with self._lock:
            order = sorted(
                (module for module in self.modules if not module.started),
                key=lambda module: (module.kind != _STARTS_FIRST, not module.is_global),
            )
            for module in order:
                if not module.started:
                    await module.startup(self)
            # After the modules documented their routes: FastAPI keeps what it reads of an
            # included route from the first look on.
            if order and self.app is not None:
                try:
                    check_routes(self.app.routes)
                except ConfigurationError:
                    for module in order:
                        await module.shutdown()  # the stores they opened
                    raise


def require_application(name: str, app: Any) -> FastAPI:
    """``app``, which ``attach`` needs to be the FastAPI application itself."""
    if not isinstance(app, FastAPI):
        raise ConfigurationError(
            f"{name}: attach() takes the FastAPI application, got {type(app).__name__}; "
            "for a router, include the module's router in it: "
            "router.include_router(module.router)"
        )
    return app


def module_lifespan(
    module: AttachableModule,
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """The lifespan a module's router carries: join the application's registry and start."""

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        registry = AppRegistry.install(app)
        registry.join(module)
        if isinstance(app, FastAPI):
            # The modules included after this one join now: startup checks see them all.
            _discover(registry, app)
        await registry.startup()
        try:
            yield
        finally:
            await module.shutdown()

    return lifespan


# Every module made in this process, to find those an application includes.
_modules: weakref.WeakSet[AttachableModule] = weakref.WeakSet()


def discoverable(module: AttachableModule, router: APIRouter, route_name: str | None) -> str:
    """Make ``module`` findable in the applications its ``router`` is included in: by
    ``route_name``, one of its routes, or else by a WebSocket route that refuses every
    connection (HTTP requests never match it). The name to find it by; "" for a feature
    without routes, which starts at its guard's first use."""
    if route_name is None:
        if not module.is_global:
            return ""
        route_name = f"auth_refresh_{module.kind}_{id(module):x}"
        router.add_api_websocket_route(f"/.auth-refresh/{module.kind}", _refuse, name=route_name)
    _modules.add(module)
    return route_name


async def _refuse(websocket: WebSocket) -> None:
    await websocket.close(code=1008)


def _discover(registry: AppRegistry, app: FastAPI) -> None:
    # The modules whose routers the application includes (its lifespan would have joined
    # them), global registrations first: the features inherit from them.
    if registry.discovered:
        return
    registry.discovered = True
    included = [module for module in list(_modules) if _includes(app, module.route_name)]
    for module in sorted(included, key=lambda module: not module.is_global):
        registry.join(module)


def _includes(app: FastAPI, name: str) -> bool:
    if not name:
        return False
    try:
        app.url_path_for(name)
    except NoMatchFound:
        return False
    return True


async def start_application(app: Any) -> None:
    """Start the modules included in ``app``, whose lifespan never ran (an unqualified guard's
    first request)."""
    if isinstance(app, FastAPI):
        registry = AppRegistry.install(app)
        _discover(registry, app)
        await registry.startup()


start_applications_with(start_application)


async def start_late(module: AttachableModule, app: Any) -> None:
    """Start ``module`` at its first request, and the other modules ``app`` includes: its
    lifespan never ran."""
    registry = AppRegistry.install(app) if isinstance(app, FastAPI) else None
    try:
        if registry is None:
            await module.startup(None)
            return
        registry.join(module)
        _discover(registry, app)
        await registry.startup()
    except ConfigurationError as error:
        raise ConfigurationError(
            f"{error.message} (found at the first request: the application's lifespan did not "
            "run; an application mounted with app.mount() never runs its own, so attach the "
            "modules to the outer application or enter this one's lifespan from the outer "
            "one's)"
        ) from None


def _install_error_handler(app: FastAPI) -> None:
    if AuthRefreshError in app.exception_handlers:
        return
    app.add_exception_handler(AuthRefreshError, error_response)
    if app.middleware_stack is None:
        return  # built with the handler at the first request
    # Added at the first request (no lifespan ran), after Starlette built the middleware
    # stack: into its ExceptionMiddleware, whose handlers the requests under way read too.
    layer: Any = app.middleware_stack
    while layer is not None and not isinstance(layer, ExceptionMiddleware):
        layer = getattr(layer, "app", None)
    if layer is not None:
        layer.add_exception_handler(AuthRefreshError, error_response)
    else:
        app.middleware_stack = None  # not found: the next request builds it with the handler
