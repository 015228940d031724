"""The ``AuthenticationModule`` companion: the default issue and verify token services.

The interfaces are Protocols; every method may be sync or async.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypedDict

from auth_refresh._utils import MaybeAwaitable
from auth_refresh.settings import JwtSettings
from auth_refresh.tokens import JwtModule, JwtService

__all__ = [
    "AuthenticationModule",
    "IssueTokenService",
    "IssueTokenServiceInterface",
    "TokenPair",
    "VerifyTokenService",
    "VerifyTokenServiceInterface",
]


class TokenPair(TypedDict):
    accessToken: str
    refreshToken: str


class IssueTokenServiceInterface(Protocol):
    """Issues tokens; ``response_payload`` is the body of a login or refresh answer."""

    def access_token(self, payload: Mapping[str, Any]) -> MaybeAwaitable[str]: ...

    def refresh_token(self, payload: Mapping[str, Any]) -> MaybeAwaitable[str]: ...

    def response_payload(self, user_id: str) -> MaybeAwaitable[TokenPair]: ...


class VerifyTokenServiceInterface(Protocol):
    """Verifies raw tokens, returning their claims or raising when they are invalid."""

    def access_token(self, token: str) -> MaybeAwaitable[Mapping[str, Any]]: ...

    def refresh_token(self, token: str) -> MaybeAwaitable[Mapping[str, Any]]: ...


class IssueTokenService:
    """Issues typed access and refresh tokens with the ``JwtService``."""

    def __init__(self, jwt_service: JwtService) -> None:
        self.jwt_service = jwt_service

    def access_token(self, payload: Mapping[str, Any]) -> str:
        return self.jwt_service.sign("access", payload)

    def refresh_token(self, payload: Mapping[str, Any]) -> str:
        return self.jwt_service.sign("refresh", payload)

    def response_payload(self, user_id: str) -> TokenPair:
        claims = {"sub": user_id}
        return {
            "accessToken": self.access_token(claims),
            "refreshToken": self.refresh_token(claims),
        }


class VerifyTokenService:
    """Verifies access and refresh tokens with the ``JwtService``."""

    def __init__(self, jwt_service: JwtService) -> None:
        self.jwt_service = jwt_service

    def access_token(self, token: str) -> dict[str, Any]:
        return self.jwt_service.verify("access", token)

    def refresh_token(self, token: str) -> dict[str, Any]:
        return self.jwt_service.verify("refresh", token)


class AuthenticationModule:
    """Holds the issue and verify services the other modules share."""

    def __init__(
        self,
        issue_token_service: IssueTokenServiceInterface,
        verify_token_service: VerifyTokenServiceInterface,
    ) -> None:
        self.issue_token_service = issue_token_service
        self.verify_token_service = verify_token_service

    @classmethod
    def for_root(
        cls,
        jwt: JwtModule | JwtSettings | Mapping[str, Any] | None = None,
        *,
        issue_token_service: IssueTokenServiceInterface | None = None,
        verify_token_service: VerifyTokenServiceInterface | None = None,
    ) -> AuthenticationModule:
        """Default services over ``jwt`` (a ``JwtModule``, or settings for one; env otherwise)."""
        if issue_token_service is None or verify_token_service is None:
            service = (jwt if isinstance(jwt, JwtModule) else JwtModule.for_root(jwt)).service
            issue_token_service = issue_token_service or IssueTokenService(service)
            verify_token_service = verify_token_service or VerifyTokenService(service)
        return cls(issue_token_service, verify_token_service)
