"""The ``AuthJwtModule`` companion: a guard for routes that need an access token.

Like the refresh module, its registration's values are the defaults of its container's
providers (``user_lookup``, ``verifier``, ``extractor``), beneath the overrides tests make.

An access token naming its session (``sid``, issued with rotation) is refused once that session
is revoked: the application's global refresh registration (``for_root``) answers from its
per-process session cache (``auth_refresh.sessions``). Without one on the application, or for a
token without ``sid``, no session is checked.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any, Protocol

from dependency_injector import containers, providers
from dependency_injector import errors as di_errors
from fastapi import APIRouter, Depends
from fastapi.security.base import SecurityBase
from starlette.requests import Request

from auth_refresh._utils import MaybeAwaitable, is_active, resolve
from auth_refresh.application import (
    AppRegistry,
    module_lifespan,
    require_application,
    start_late,
)
from auth_refresh.authentication import AuthenticationModule, VerifyTokenServiceInterface
from auth_refresh.checks import refuse_class, require_methods
from auth_refresh.exceptions import AuthJwtUnauthorizedError, AuthRefreshError, ConfigurationError
from auth_refresh.extractors import AuthHeaderSchemeExtractor, TokenExtractor
from auth_refresh.openapi import access_scheme

__all__ = [
    "AuthJwtContainer",
    "AuthJwtGuard",
    "AuthJwtModule",
    "AuthJwtUserLookupServiceInterface",
    "claims_of",
]

KIND = "auth_jwt"
REFRESH_KIND = "auth_refresh"
SESSION_CLAIM = "sid"
# A session id is a base64url SHA-256 digest (43 characters); anything far longer is not one.
MAX_SESSION_ID = 256


class AuthJwtUserLookupServiceInterface(Protocol):
    """Finds the user an access token's subject names; None when there is none."""

    def by_subject(self, subject: str) -> MaybeAwaitable[Any | None]: ...


def _default_verifier() -> VerifyTokenServiceInterface:
    return AuthenticationModule.for_root().verify_token_service


class AuthJwtContainer(containers.DeclarativeContainer):
    """Providers of one access-token registration; tests override them on the instance.

    ``verifier`` defaults to ``AuthenticationModule``'s (``JWT_MODULE_*``); ``extractor`` to
    ``Authorization: Bearer <token>``; ``user_lookup`` has no default.
    """

    user_lookup: providers.Dependency[Any] = providers.Dependency()
    verifier: providers.Dependency[Any] = providers.Dependency(
        default=providers.ThreadSafeSingleton(_default_verifier)
    )
    extractor: providers.Dependency[Any] = providers.Dependency(
        default=providers.Object(AuthHeaderSchemeExtractor("bearer"))
    )


class AuthJwtModule:
    """Access-token authentication: ``Authorization: Bearer <access token>`` by default."""

    kind = KIND
    is_global = True

    def __init__(
        self,
        user_lookup_service: AuthJwtUserLookupServiceInterface,
        verify_token_service: VerifyTokenServiceInterface | None = None,
        jwt_from_request: TokenExtractor | None = None,
    ) -> None:
        self.name = "AuthJwtModule.for_root"
        self.container = AuthJwtContainer()
        given = {
            "user_lookup": ("user_lookup_service", user_lookup_service),
            "verifier": ("verify_token_service", verify_token_service),
            "extractor": ("jwt_from_request", jwt_from_request),
        }
        for provider_name, (option, value) in given.items():
            if value is None:
                continue
            refuse_class(self.name, option, value)
            getattr(self.container, provider_name).set_default(providers.Object(value))
        self.started = False
        self.security_schemes: dict[str, SecurityBase] = {}
        self.guard = AuthJwtGuard(self)
        self.router = APIRouter(lifespan=module_lifespan(self))

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
            # Made now, so missing JWT_MODULE_* settings fail the registration.
            verify_token_service = _default_verifier()
        return cls(user_lookup_service, verify_token_service, jwt_from_request)

    def attach(self, app: Any) -> None:
        """The same as ``app.include_router(module.router)``; unqualified guards know it
        before startup."""
        application = require_application(self.name, app)
        AppRegistry.install(application).add(self)
        application.include_router(self.router)

    async def startup(self, registry: AppRegistry | None) -> None:
        """Check every provider resolves to something usable."""
        container = self.container
        try:
            lookup = container.user_lookup()
        except di_errors.Error:
            raise ConfigurationError(
                f"{self.name}: the option 'user_lookup_service' is required"
            ) from None
        require_methods(self.name, "user_lookup_service", lookup, "by_subject")
        try:
            verifier = container.verifier()
        except ConfigurationError as error:
            raise ConfigurationError(f"{self.name}: {error.message}") from None
        require_methods(self.name, "verify_token_service", verifier, "access_token")
        if not callable(container.extractor()):
            raise ConfigurationError(f"{self.name}: 'jwt_from_request' is not callable")
        self.started = True

    async def shutdown(self) -> None:
        self.started = False

    async def authenticate(self, request: Request) -> Any:
        """The user the request's access token names; raises a 401 error otherwise."""
        if not self.started:
            await start_late(self, request.app)
        container = self.container
        token = await resolve(container.extractor()(request))
        if not isinstance(token, str) or not token:
            raise AuthJwtUnauthorizedError(token_sent=False)
        try:
            claims = await resolve(container.verifier().access_token(token))
        except AuthRefreshError as error:
            if error.status_code != 401:
                raise
            raise AuthJwtUnauthorizedError() from None
        except Exception:  # a verify service raising means the token is invalid
            raise AuthJwtUnauthorizedError() from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise AuthJwtUnauthorizedError()
        session_id = claims.get(SESSION_CLAIM)
        if session_id is not None and not await _session_active(request, session_id, subject):
            raise AuthJwtUnauthorizedError()
        user = await resolve(container.user_lookup().by_subject(subject))
        if user is None or not is_active(user):
            raise AuthJwtUnauthorizedError()
        request.state.auth_jwt_claims = claims
        return user


def claims_of(request: Request) -> Any:
    """The claims of the access token an ``AuthJwtGuard`` accepted for ``request``, or None."""
    return getattr(request.state, "auth_jwt_claims", None)


async def _session_active(request: Request, session_id: object, subject: str) -> bool:
    if not isinstance(session_id, str) or not session_id or len(session_id) > MAX_SESSION_ID:
        return False
    registry = AppRegistry.of(request.app)
    refresh = registry.root(REFRESH_KIND) if registry is not None else None
    if refresh is None:
        return True  # no store here to ask: as for a token without a session
    active: bool = await refresh.session_active(session_id, subject)
    return active


class AuthJwtGuard:
    """Authenticates a request by its access token: ``Depends(AuthJwtGuard())``.

    Without a module it uses the application's ``AuthJwtModule``. Guards of the same
    registration are equal, so ``app.dependency_overrides[AuthJwtGuard()] = fake_user``
    replaces them. The route's OpenAPI shows the lock of the scheme the extractor reads.
    """

    __signature__: inspect.Signature

    def __init__(self, module: AuthJwtModule | None = None) -> None:
        self.module = module
        registered = module.container.extractor() if module is not None else None
        scheme = access_scheme(registered)
        # FastAPI reads the dependency's parameters from its signature: the security scheme
        # is one of them, so the operation names it and Swagger UI sends the token.
        self.__signature__ = inspect.Signature(
            [
                inspect.Parameter(
                    "request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request
                ),
                inspect.Parameter(
                    "credentials",
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=Annotated[Any, Depends(scheme)],
                    default=None,
                ),
            ]
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AuthJwtGuard) and other.module is self.module

    def __hash__(self) -> int:
        return hash((AuthJwtGuard, id(self.module)))

    async def __call__(self, request: Request, credentials: Any = None) -> Any:
        module = self.module
        if module is None:
            registry = AppRegistry.of(request.app)
            module = registry.root(KIND) if registry else None
            if module is None:
                raise RuntimeError("AuthJwtGuard() needs AuthJwtModule.for_root(...) attached")
        return await module.authenticate(request)
