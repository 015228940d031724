"""JWT refresh tokens for FastAPI: a port of Rockets' ``@concepta/nestjs-auth-refresh``."""

from auth_refresh.companions.auth_jwt import AuthJwtContainer, AuthJwtModule
from auth_refresh.companions.auth_local import AuthLocalModule
from auth_refresh.companions.authentication import AuthenticationModule, JwtModule
from auth_refresh.companions.passwords import PasswordRehashServiceInterface, PasswordStorageService
from auth_refresh.exceptions import (
    AuthJwtUnauthorizedError,
    AuthLocalBusyError,
    AuthLocalInvalidCredentialsError,
    AuthLocalTooManyLoginsError,
    AuthRefreshError,
    AuthRefreshUnauthorizedError,
    ConfigurationError,
    CsrfError,
    DpopBindingError,
    DpopError,
    DpopNonceError,
    InvalidDpopProofError,
    InvalidRequestError,
    InvalidTokenError,
    MissingTokenError,
    RequestTooLargeError,
    SessionNotFoundError,
    StoreUnavailableError,
    TooManyRequestsError,
    UnauthorizedError,
    UnavailableError,
)
from auth_refresh.flows.guards import AuthJwtGuard, AuthRefreshGuard
from auth_refresh.flows.refresh import LoginIssueTokenService
from auth_refresh.registration.container import AuthRefreshContainer
from auth_refresh.registration.module import AuthRefreshModule
from auth_refresh.registration.options import (
    AsyncRegistrationOptions,
    AuthRefreshOptions,
    AuthRefreshOptionsFactory,
    RegistrationOptions,
)
from auth_refresh.rotation import TokenReuseEvent, TokenRotationService
from auth_refresh.settings import AuthLocalSettings, AuthRefreshSettings, JwtSettings, KeySettings
from auth_refresh.stores.base import (
    ProofReplayCache,
    RefreshTokenStore,
    Rotation,
    RotationOutcome,
    SessionCursor,
    SessionRecord,
    SessionStart,
    Successor,
)
from auth_refresh.stores.memory import MemoryRefreshTokenStore
from auth_refresh.stores.registry import open_store, register_store_scheme
from auth_refresh.stores.sqlite import SqliteRefreshTokenStore
from auth_refresh.tokens.jwt import IssueTokenService, JwtService, VerifyTokenService
from auth_refresh.tokens.keys import JwtKey, KeyRing
from auth_refresh.transport.extractors import (
    AuthHeaderSchemeExtractor,
    BodyFieldExtractor,
    ChainExtractor,
    CookieExtractor,
    ExtractJwt,
    HeaderExtractor,
    QueryParameterExtractor,
)
from auth_refresh.transport.jwks import jwks_router
from auth_refresh.types import (
    AuthJwtUserLookupServiceInterface,
    AuthLocalUserLookupServiceInterface,
    AuthRefreshUserLookupServiceInterface,
    IssueTokenServiceInterface,
    TokenPair,
    VerifyTokenServiceInterface,
)

__all__ = [
    "AsyncRegistrationOptions",
    "AuthHeaderSchemeExtractor",
    "AuthJwtContainer",
    "AuthJwtGuard",
    "AuthJwtModule",
    "AuthJwtUnauthorizedError",
    "AuthJwtUserLookupServiceInterface",
    "AuthLocalBusyError",
    "AuthLocalInvalidCredentialsError",
    "AuthLocalModule",
    "AuthLocalSettings",
    "AuthLocalTooManyLoginsError",
    "AuthLocalUserLookupServiceInterface",
    "AuthRefreshContainer",
    "AuthRefreshError",
    "AuthRefreshGuard",
    "AuthRefreshModule",
    "AuthRefreshOptions",
    "AuthRefreshOptionsFactory",
    "AuthRefreshSettings",
    "AuthRefreshUnauthorizedError",
    "AuthRefreshUserLookupServiceInterface",
    "AuthenticationModule",
    "BodyFieldExtractor",
    "ChainExtractor",
    "ConfigurationError",
    "CookieExtractor",
    "CsrfError",
    "DpopBindingError",
    "DpopError",
    "DpopNonceError",
    "ExtractJwt",
    "HeaderExtractor",
    "InvalidDpopProofError",
    "InvalidRequestError",
    "InvalidTokenError",
    "IssueTokenService",
    "IssueTokenServiceInterface",
    "JwtKey",
    "JwtModule",
    "JwtService",
    "JwtSettings",
    "KeyRing",
    "KeySettings",
    "LoginIssueTokenService",
    "MemoryRefreshTokenStore",
    "MissingTokenError",
    "PasswordRehashServiceInterface",
    "PasswordStorageService",
    "ProofReplayCache",
    "QueryParameterExtractor",
    "RefreshTokenStore",
    "RegistrationOptions",
    "RequestTooLargeError",
    "Rotation",
    "RotationOutcome",
    "SessionCursor",
    "SessionNotFoundError",
    "SessionRecord",
    "SessionStart",
    "SqliteRefreshTokenStore",
    "StoreUnavailableError",
    "Successor",
    "TokenPair",
    "TokenReuseEvent",
    "TokenRotationService",
    "TooManyRequestsError",
    "UnauthorizedError",
    "UnavailableError",
    "VerifyTokenService",
    "VerifyTokenServiceInterface",
    "jwks_router",
    "open_store",
    "register_store_scheme",
]

__version__ = "0.1.0"
