"""JWT refresh tokens for FastAPI: a port of Rockets' ``@concepta/nestjs-auth-refresh``."""

from auth_refresh.auth_jwt import AuthJwtGuard, AuthJwtModule, AuthJwtUserLookupServiceInterface
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
    AuthLocalInvalidCredentialsError,
    AuthRefreshError,
    AuthRefreshUnauthorizedError,
    ConfigurationError,
    InvalidRequestError,
    InvalidTokenError,
    MissingTokenError,
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
from auth_refresh.local import (
    AuthLocalModule,
    AuthLocalUserLookupServiceInterface,
    PasswordStorageService,
)
from auth_refresh.module import (
    AuthRefreshModule,
    AuthRefreshOptions,
    AuthRefreshOptionsFactory,
    AuthRefreshUserLookupServiceInterface,
)
from auth_refresh.settings import AuthRefreshSettings, JwtSettings
from auth_refresh.tokens import JwtModule, JwtService

__all__ = [
    "AuthHeaderSchemeExtractor",
    "AuthJwtGuard",
    "AuthJwtModule",
    "AuthJwtUnauthorizedError",
    "AuthJwtUserLookupServiceInterface",
    "AuthLocalInvalidCredentialsError",
    "AuthLocalModule",
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
    "ExtractJwt",
    "HeaderExtractor",
    "InvalidRequestError",
    "InvalidTokenError",
    "IssueTokenService",
    "IssueTokenServiceInterface",
    "JwtModule",
    "JwtService",
    "JwtSettings",
    "MissingTokenError",
    "PasswordStorageService",
    "QueryParameterExtractor",
    "TokenPair",
    "UnauthorizedError",
    "VerifyTokenService",
    "VerifyTokenServiceInterface",
]

__version__ = "0.1.0"
