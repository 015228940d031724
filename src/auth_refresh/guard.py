"""``AuthRefreshGuard``: a FastAPI dependency that yields the user a refresh token names."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from auth_refresh.application import AppRegistry

if TYPE_CHECKING:
    from auth_refresh.module import AuthRefreshModule

__all__ = ["AuthRefreshGuard"]


class AuthRefreshGuard:
    """Authenticates a request by its refresh token: ``Depends(AuthRefreshGuard())``.

    Without a module it uses the application's global registration (``for_root``).
    """

    def __init__(self, module: AuthRefreshModule | None = None) -> None:
        self.module = module

    async def __call__(self, request: Request) -> Any:
        module = self.module or _global_module(request)
        return await module.authenticate(request)


def _global_module(request: Request) -> AuthRefreshModule:
    registry = AppRegistry.of(request.app)
    module: AuthRefreshModule | None = registry.root("auth_refresh") if registry else None
    if module is None:
        raise RuntimeError(
            "AuthRefreshGuard() needs AuthRefreshModule.for_root(...) attached to the "
            "application; pass a module to guard with a feature registration"
        )
    return module
