"""``AuthRefreshGuard``: a FastAPI dependency that yields the user a refresh token names."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from auth_refresh.application import AppRegistry

if TYPE_CHECKING:
    from auth_refresh.module import AuthRefreshModule

__all__ = ["AuthRefreshGuard"]


class AuthRefreshGuard:
    """Authenticates a request by its refresh token: ``Depends(AuthRefreshGuard())``.

    Without a module it uses the application's global registration (``for_root``). Guards of
    the same registration are equal, so ``app.dependency_overrides[AuthRefreshGuard()]``
    replaces them. With rotation the token is consumed: the route must answer with
    ``module.token_response(await module.issue(user, request))``, the successor pair, or the
    client's next refresh is a reuse that revokes its session (a warning names such a route).
    """

    def __init__(self, module: AuthRefreshModule | None = None) -> None:
        self.module = module

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AuthRefreshGuard) and other.module is self.module

    def __hash__(self) -> int:
        return hash((AuthRefreshGuard, id(self.module)))

    async def __call__(self, request: Request) -> AsyncIterator[Any]:
        module = self.module or _global_module(request)
        yield await module.authenticate(request)
        # After the route, unless it raised: was the successor pair handed over?
        module.warn_if_successor_kept(request)


def _global_module(request: Request) -> AuthRefreshModule:
    registry = AppRegistry.of(request.app)
    module: AuthRefreshModule | None = registry.root("auth_refresh") if registry else None
    if module is None:
        raise RuntimeError(
            "AuthRefreshGuard() needs AuthRefreshModule.for_root(...) attached to the "
            "application; pass a module to guard with a feature registration"
        )
    return module
