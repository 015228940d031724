"""The auth modules of one FastAPI application, and how they start.

Every module's router carries a lifespan, so ``app.include_router(module.router)`` and
``module.attach(app)`` are the same: on the application's startup (after its own lifespan has
entered, so option factories can use its resources) each module joins the application's
``AppRegistry`` (in ``app.state``), which installs the error handler and the OpenAPI additions
once and starts the modules, global registrations first. A module whose lifespan never ran
(an application mounted with ``app.mount()``) starts on its first request instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from fastapi import FastAPI
from fastapi.security.base import SecurityBase

from auth_refresh.exceptions import AuthRefreshError, ConfigurationError
from auth_refresh.flows.guards import APP_FLOWS, AppFlows
from auth_refresh.registration.openapi import install_openapi
from auth_refresh.transport.responses import error_response

__all__ = ["AppRegistry", "AttachableModule", "module_lifespan", "require_application"]

# The refresh modules start first: the login and access modules may use them.
_STARTS_FIRST = "auth_refresh"


class AttachableModule(Protocol):
    name: str
    kind: str
    is_global: bool
    started: bool
    security_schemes: dict[str, SecurityBase]

    async def startup(self, registry: AppRegistry | None) -> None: ...

    async def shutdown(self) -> None: ...

    def publish(self, flows: AppFlows) -> None:
        """As the application's global registration of its kind: hand its flow to the
        unqualified guards."""


class AppRegistry:
    """The auth modules of one application."""

    def __init__(self) -> None:
        self.modules: list[AttachableModule] = []
        self.roots: dict[str, AttachableModule] = {}
        # What the request walks read (app.state): the global registrations' flows.
        self.flows = AppFlows()
        self._lock = asyncio.Lock()

    @classmethod
    def install(cls, app: FastAPI) -> AppRegistry:
        registry = cls.of(app)
        if registry is not None:
            return registry
        registry = cls()
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
        """Start every module not started yet: refresh modules, global ones first."""
        async with self._lock:
            order = sorted(
                self.modules,
                key=lambda module: (module.kind != _STARTS_FIRST, not module.is_global),
            )
            for module in order:
                if not module.started:
                    await module.startup(self)


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
        await registry.startup()
        try:
            yield
        finally:
            await module.shutdown()

    return lifespan


async def start_late(module: AttachableModule, app: Any) -> None:
    """Start ``module`` at its first request: its application's lifespan never ran."""
    registry = AppRegistry.install(app) if isinstance(app, FastAPI) else None
    try:
        if registry is None:
            await module.startup(None)
            return
        registry.join(module)
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
    # Added at startup (a router's lifespan), after Starlette built the middleware stack:
    # clearing it (a public attribute) makes the next request build it with the handler.
    app.middleware_stack = None
