"""Compact JWS tokens: signing and verifying them (``jwt``), and the key rings that do it
(``keys``). Nothing here knows a request, a store or a registration."""

from auth_refresh.tokens.jwt import IssueTokenService, JwtService, VerifyTokenService
from auth_refresh.tokens.keys import JwtKey, KeyRing

__all__ = ["IssueTokenService", "JwtKey", "JwtService", "KeyRing", "VerifyTokenService"]
