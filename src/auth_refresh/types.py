"""Shared types: the token pair, the claim names, and the small Protocols services implement.

Every method of a service Protocol may be sync or async.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, Protocol, TypedDict

from auth_refresh._utils import MaybeAwaitable

__all__ = [
    "AUTH_TIME_CLAIM",
    "CONFIRMATION_CLAIM",
    "FAMILY_CLAIM",
    "SESSION_CLAIM",
    "AuthJwtUserLookupServiceInterface",
    "AuthLocalUserLookupServiceInterface",
    "AuthRefreshUserLookupServiceInterface",
    "IssueTokenServiceInterface",
    "IssuedPair",
    "Refreshed",
    "TokenPair",
    "TokenType",
    "VerifyTokenServiceInterface",
]

TokenType = Literal["access", "refresh"]

# A refresh token names its token family in this claim.
FAMILY_CLAIM = "fam"
# OpenID Connect's name for a session id (as in its front- and back-channel logout).
SESSION_CLAIM = "sid"
# OpenID Connect's name for when the login happened: the family's tokens expire with it.
AUTH_TIME_CLAIM = "auth_time"
# RFC 7800's confirmation claim: a DPoP-bound token names its key's thumbprint in it ("jkt").
CONFIRMATION_CLAIM = "cnf"


class TokenPair(TypedDict):
    accessToken: str
    refreshToken: str
    tokenType: NotRequired[str]  # "DPoP" when the pair is bound to a DPoP key


@dataclass(frozen=True)
class IssuedPair:
    """A pair just issued, with what its answer needs of the refresh token without reading it
    back: its family (what the CSRF token is bound to) and its expiry (the cookie's Max-Age).
    None where they are not known (a pair from an issue service, or a grace-window repeat)."""

    pair: TokenPair
    family_id: str | None = None
    expires_at: float | None = None


@dataclass(frozen=True)
class Refreshed:
    """A refresh that succeeded: whom the token named, and the pair to answer with."""

    user: Any
    issued: IssuedPair | None  # None when not asked for (a guard, without rotation)

    @property
    def pair(self) -> TokenPair | None:
        return None if self.issued is None else self.issued.pair


class IssueTokenServiceInterface(Protocol):
    """Issues tokens; ``response_payload`` is the body of a login or refresh answer."""

    def access_token(self, payload: Mapping[str, Any]) -> MaybeAwaitable[str]: ...

    def refresh_token(self, payload: Mapping[str, Any]) -> MaybeAwaitable[str]: ...

    def response_payload(self, user_id: str) -> MaybeAwaitable[TokenPair]: ...


class VerifyTokenServiceInterface(Protocol):
    """Verifies raw tokens, returning their claims or raising when they are invalid."""

    def access_token(self, token: str) -> MaybeAwaitable[Mapping[str, Any]]: ...

    def refresh_token(self, token: str) -> MaybeAwaitable[Mapping[str, Any]]: ...


class AuthRefreshUserLookupServiceInterface(Protocol):
    """Finds the user a token's subject names; None when there is none."""

    def by_subject(self, subject: str) -> MaybeAwaitable[Any | None]: ...


class AuthJwtUserLookupServiceInterface(Protocol):
    """Finds the user an access token's subject names; None when there is none. The same
    shape as ``AuthRefreshUserLookupServiceInterface``, and a contract of its own: a service
    may declare both."""

    def by_subject(self, subject: str) -> MaybeAwaitable[Any | None]: ...


class AuthLocalUserLookupServiceInterface(Protocol):
    """Finds a user by username; the user has ``id`` and ``password_hash`` (or the attribute
    ``password_attribute`` names). An ``update_password_hash(user, password_hash)`` method, if
    present, receives the new hash of a user whose hash is outdated (see ``passwords``)."""

    def by_username(self, username: str) -> MaybeAwaitable[Any | None]: ...
