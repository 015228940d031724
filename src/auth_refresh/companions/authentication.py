"""The ``JwtModule`` and ``AuthenticationModule`` companions: signing, and the default issue and
verify token services over it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from auth_refresh.settings import JwtSettings, build_settings
from auth_refresh.tokens.jwt import IssueTokenService, JwtService, VerifyTokenService
from auth_refresh.types import IssueTokenServiceInterface, VerifyTokenServiceInterface

__all__ = ["AuthenticationModule", "JwtModule"]


class JwtModule:
    """The JWT companion: settings from ``JWT_MODULE_*`` merged under those given in code."""

    def __init__(self, service: JwtService) -> None:
        self.service = service
        self.settings = service.settings

    @classmethod
    def for_root(cls, settings: JwtSettings | Mapping[str, Any] | None = None) -> JwtModule:
        return cls(JwtService(build_settings(JwtSettings, settings)))


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
