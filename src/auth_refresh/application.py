"""Attaching modules to a FastAPI application.

Each application gets one ``AppRegistry`` (in ``app.state``) on the first ``attach``: it installs
the exception handler once, wraps the lifespan so modules start after the application's own
lifespan has entered, and knows each kind's global module for unqualified guards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from fastapi import FastAPI
from starlette.types import ASGIApp

from auth_refresh.exceptions import AuthRefreshError, ConfigurationError
from auth_refresh.responses import error_response

__all__ = ["AppRegistry", "AttachableModule"]


class AttachableModule(Protocol):
    is_global: bool

    async def startup(self, registry: AppRegistry) -> None: ...


class AppRegistry:
    """The auth modules attached to one application."""

    def __init__(self) -> None:
        self.modules: list[AttachableModule] = []
        self.roots: dict[str, Any] = {}

    @classmethod
    def install(cls, app: FastAPI) -> AppRegistry:
        registry = cls.of(app)
        if registry is not None:
            return registry
        registry = cls()
        app.state.auth_refresh_registry = registry
        app.add_exception_handler(AuthRefreshError, error_response)
        inner = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(asgi_app: ASGIApp) -> AsyncIterator[Any]:
            # Inside the application's own lifespan, so option factories can use its resources.
            async with inner(asgi_app) as state:
                await registry.startup()
                try:
                    yield state
                finally:
                    await registry.shutdown()

        app.router.lifespan_context = lifespan
        return registry

    @staticmethod
    def of(app: Any) -> AppRegistry | None:
        registry = getattr(getattr(app, "state", None), "auth_refresh_registry", None)
        return registry if isinstance(registry, AppRegistry) else None

    def add(self, module: AttachableModule, kind: str) -> None:
        if module in self.modules:
            raise ConfigurationError(f"this {kind} module is attached to the application already")
        if module.is_global:
            if kind in self.roots:
                raise ConfigurationError(f"a global {kind} module is attached already")
            self.roots[kind] = module
        self.modules.append(module)

    def root(self, kind: str) -> Any:
        """The global module of ``kind``, or None."""
        return self.roots.get(kind)

    async def startup(self) -> None:
        # Global modules first: the others inherit from them.
        for module in sorted(self.modules, key=lambda module: not module.is_global):
            await module.startup(self)

    async def shutdown(self) -> None:
        # Modules that hold resources (a refresh module's store) have shutdown(); in reverse.
        for module in reversed(self.modules):
            shutdown = getattr(module, "shutdown", None)
            if shutdown is not None:
                await shutdown()
