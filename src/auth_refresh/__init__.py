"""JWT refresh tokens for FastAPI: a port of Rockets' ``@concepta/nestjs-auth-refresh``."""

from auth_refresh.auth_jwt import (
    AuthJwtContainer,
    AuthJwtGuard,
    AuthJwtModule,
    AuthJwtUserLookupServiceInterface,
)
from auth_refresh.authentication import (
    AuthenticationModule,
    IssueTokenService,
    IssueTokenServiceInterface,
    TokenPair,
    VerifyTokenService,
    VerifyTokenServiceInterface,
)
from auth_refresh.container import AuthRefreshContainer
from auth_refresh.exceptions import (
    AuthJwtUnauthorizedError,
    AuthLocalBusyError,
    AuthLocalInvalidCredentialsError,
    AuthRefreshError,
    AuthRefreshUnauthorizedError,
    ConfigurationError,
    CsrfError,
    InvalidRequestError,
    InvalidTokenError,
    MissingTokenError,
    RequestTooLargeError,
    SessionNotFoundError,
    StoreUnavailableError,
    UnauthorizedError,
)
from auth_refresh.extractors import (
    AuthHeaderSchemeExtractor,
    BodyFieldExtractor,
    ChainExtractor,
    CookieExtractor,
    ExtractJwt,
    HeaderExtractor,
    QueryParameterExtractor,
)
from auth_refresh.guard import AuthRefreshGuard
from auth_refresh.keys import JwtKey, KeyRing, KeySettings
from auth_refresh.local import (
    AuthLocalModule,
    AuthLocalUserLookupServiceInterface,
    PasswordStorageService,
)
from auth_refresh.login import LoginIssueTokenService
from auth_refresh.memory_store import MemoryRefreshTokenStore
from auth_refresh.module import AuthRefreshModule
from auth_refresh.passwords import PasswordRehashServiceInterface
from auth_refresh.registration import (
    AuthRefreshOptions,
    AuthRefreshOptionsFactory,
    AuthRefreshUserLookupServiceInterface,
)
from auth_refresh.rotation import TokenReuseEvent, TokenRotationService
from auth_refresh.settings import AuthLocalSettings, AuthRefreshSettings, JwtSettings
from auth_refresh.sqlite_store import SqliteRefreshTokenStore
from auth_refresh.store import (
    RefreshTokenStore,
    Rotation,
    RotationOutcome,
    SessionRecord,
    SessionStart,
    Successor,
    open_store,
    register_store_scheme,
)
from auth_refresh.tokens import JwtModule, JwtService, jwks_router

__all__ = [
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
    "ExtractJwt",
    "HeaderExtractor",
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
    "QueryParameterExtractor",
    "RefreshTokenStore",
    "RequestTooLargeError",
    "Rotation",
    "RotationOutcome",
    "SessionNotFoundError",
    "SessionRecord",
    "SessionStart",
    "SqliteRefreshTokenStore",
    "StoreUnavailableError",
    "Successor",
    "TokenPair",
    "TokenReuseEvent",
    "TokenRotationService",
    "UnauthorizedError",
    "VerifyTokenService",
    "VerifyTokenServiceInterface",
    "jwks_router",
    "open_store",
    "register_store_scheme",
]

__version__ = "0.1.0"
