"""The ``AuthJwtModule`` companion: a guard for routes that need an access token."""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import FastAPI
from starlette.requests import Request

from auth_refresh._utils import MaybeAwaitable, is_active, resolve
from auth_refresh.application import AppRegistry
from auth_refresh.authentication import AuthenticationModule, VerifyTokenServiceInterface
from auth_refresh.exceptions import AuthJwtUnauthorizedError, AuthRefreshError
from auth_refresh.extractors import AuthHeaderSchemeExtractor, TokenExtractor

__all__ = ["AuthJwtGuard", "AuthJwtModule", "AuthJwtUserLookupServiceInterface"]

KIND = "auth_jwt"


class AuthJwtUserLookupServiceInterface(Protocol):
    """Finds the user an access token's subject names; None when there is none."""

    def by_subject(self, subject: str) -> MaybeAwaitable[Any | None]: ...


class AuthJwtModule:
    """Access-token authentication: ``Authorization: Bearer <access token>`` by default."""

    is_global = True

    def __init__(
        self,
        user_lookup_service: AuthJwtUserLookupServiceInterface,
        verify_token_service: VerifyTokenServiceInterface,
        jwt_from_request: TokenExtractor,
    ) -> None:
        self.user_lookup_service = user_lookup_service
        self.verify_token_service = verify_token_service
        self.jwt_from_request = jwt_from_request
        self.guard = AuthJwtGuard(self)

    @classmethod
    def for_root(
        cls,
        *,
        user_lookup_service: AuthJwtUserLookupServiceInterface,
        verify_token_service: VerifyTokenServiceInterface | None = None,
        jwt_from_request: TokenExtractor | None = None,
    ) -> AuthJwtModule:
        """The verify service defaults to ``AuthenticationModule``'s (``JWT_MODULE_*`` env)."""
        if verify_token_service is None:
            verify_token_service = AuthenticationModule.for_root().verify_token_service
        return cls(
            user_lookup_service,
            verify_token_service,
            jwt_from_request or AuthHeaderSchemeExtractor("bearer"),
        )

    def attach(self, app: FastAPI) -> None:
        AppRegistry.install(app).add(self, KIND)

    async def startup(self, registry: AppRegistry) -> None:
        return None

    async def authenticate(self, request: Request) -> Any:
        """The user the request's access token names; raises a 401 error otherwise."""
        token = await resolve(self.jwt_from_request(request))
        if not isinstance(token, str) or not token:
            raise AuthJwtUnauthorizedError(token_sent=False)
        try:
            claims = await resolve(self.verify_token_service.access_token(token))
        except AuthRefreshError as error:
            if error.status_code != 401:
                raise
            raise AuthJwtUnauthorizedError() from None
        except Exception:  # a verify service raising means the token is invalid
            raise AuthJwtUnauthorizedError() from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise AuthJwtUnauthorizedError()
        user = await resolve(self.user_lookup_service.by_subject(subject))
        if user is None or not is_active(user):
            raise AuthJwtUnauthorizedError()
        return user


class AuthJwtGuard:
    """Authenticates a request by its access token: ``Depends(AuthJwtGuard())``."""

    def __init__(self, module: AuthJwtModule | None = None) -> None:
        self.module = module

    async def __call__(self, request: Request) -> Any:
        module = self.module
        if module is None:
            registry = AppRegistry.of(request.app)
            module = registry.root(KIND) if registry else None
            if module is None:
                raise RuntimeError("AuthJwtGuard() needs AuthJwtModule.for_root(...) attached")
        return await module.authenticate(request)
