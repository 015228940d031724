"""The OAuth 2.0 token endpoint beside the login route: ``AuthLocalModule.for_root(token_path=)``.

A form-encoded ``POST`` (RFC 6749 §3.2) with ``grant_type=password``, ``username`` and
``password`` (§4.3) goes through the login's own checks (its per-client and per-username shares,
its hashing cap, failures as slow as any) and starts a session as a login does;
``grant_type=refresh_token`` with ``refresh_token`` (§6) goes through the refresh registration's
walk (rotation, reuse detection, grace). The answer is §5.1's, the errors §5.2's.

Clients are public (§2.1): none is registered, none authenticates. A client may name itself
(``client_id``, or HTTP Basic with an empty password, which Swagger UI sends); one that sends a
secret is an unknown client: ``invalid_client``, 401 with a ``Basic`` challenge (§5.2).

With the refresh registration's ``dpop`` on, a grant's ``DPoP`` proof is checked as at the
login and refresh routes and the pair is bound to its key: ``token_type`` ``DPoP`` (RFC 9449
§5). A bad proof is ``invalid_dpop_proof``, a needed nonce ``use_dpop_nonce`` with a
``DPoP-Nonce`` header (§8), both 400; a bound refresh token without its key's proof is
``invalid_grant``, and its session goes on.
"""

from __future__ import annotations

import binascii
import time
from base64 import b64decode
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from auth_refresh._utils import unverified_claims
from auth_refresh.companions.token_openapi import (
    CHALLENGE,
    FORM,
    PASSWORD_SCHEME,
    OAuthErrorBody,
    OAuthErrorCode,
    OAuthTokenBody,
    PasswordFlowScheme,
    error_responses,
    grant_body,
    proof_header,
)
from auth_refresh.exceptions import (
    AuthLocalInvalidCredentialsError,
    AuthRefreshError,
    ConfigurationError,
    DpopNonceError,
    InvalidDpopProofError,
    InvalidRequestError,
    TooManyRequestsError,
    UnauthorizedError,
    UnavailableError,
)
from auth_refresh.flows.refresh import LoginIssueTokenService, RefreshFlow
from auth_refresh.registration.application import AttachableModule, start_late
from auth_refresh.registration.routes import operation_id
from auth_refresh.telemetry import operation_span
from auth_refresh.tokens.jwt import IssueTokenService
from auth_refresh.transport.bodies import read_body_fields, single_field
from auth_refresh.transport.responses import NO_STORE
from auth_refresh.types import TokenPair

__all__ = ["PASSWORD_SCHEME", "OAuthErrorBody", "OAuthTokenBody", "TokenEndpoint"]


class GrantError(InvalidRequestError):
    """A token request refused with an RFC 6749 §5.2 error: a request the protocol refuses
    (its span's outcome is the library's invalid-request code), or a refusal of the login or
    refresh walk, answered in the protocol's terms (``from_walk``)."""

    def __init__(
        self,
        error: OAuthErrorCode,
        description: str,
        status: int = 400,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(description)
        self.error = error
        self.status = status
        self.answer_headers = dict(headers or {})

    @classmethod
    def from_walk(cls, error: AuthRefreshError) -> GrantError:
        """The §5.2 error for a refusal of the walks; a fault (a 500) stays the library's."""
        if isinstance(error, AuthLocalInvalidCredentialsError):
            return cls("invalid_grant", error.message)
        # RFC 9449 §5 and §8: a proof's refusals are 400s of their own codes.
        if isinstance(error, DpopNonceError):
            return cls("use_dpop_nonce", error.message, headers={"DPoP-Nonce": error.nonce})
        if isinstance(error, InvalidDpopProofError):
            return cls("invalid_dpop_proof", error.message)
        if isinstance(error, UnauthorizedError):  # one answer, as /auth/refresh gives one 401
            return cls("invalid_grant", "The refresh token is invalid, expired or revoked")
        if isinstance(error, InvalidRequestError):  # 413 included: the status stays
            return cls("invalid_request", error.message, error.status_code)
        if isinstance(error, TooManyRequestsError | UnavailableError):
            # RFC 6749 names this code for the authorization endpoint; §5.2 has none for
            # "try again later": the status and Retry-After say the rest.
            status, headers = error.status_code, error.headers
            return cls("temporarily_unavailable", error.message, status, headers)
        raise error

    def response(self) -> Response:
        body = {"error": self.error, "error_description": self.message}
        headers = {**NO_STORE, **self.answer_headers}
        return JSONResponse(body, status_code=self.status, headers=headers)


class PasswordLogin(AttachableModule, Protocol):
    """The login module whose checks the password grant goes through (``AuthLocalModule``)."""

    router: APIRouter
    issue_token_service: Any

    async def login_pair(
        self, request: Request, fields: Callable[[], Awaitable[Mapping[str, Any] | None]]
    ) -> TokenPair: ...


class TokenEndpoint:
    """``POST {path}`` on the login module's router; the refresh grant uses the refresh
    registration the login issues through, found at the login's startup (``start``)."""

    def __init__(self, login: PasswordLogin, path: str) -> None:
        self.login = login
        self.path = path
        self.flow: RefreshFlow | None = None
        self.route_name = f"auth_refresh_token_{id(self):x}"
        login.router.add_api_route(
            path,
            self.token,
            methods=["POST"],
            summary="OAuth 2.0 token endpoint: password and refresh_token grants",
            operation_id=operation_id("token", path),
            name=self.route_name,
            responses={
                200: {"model": OAuthTokenBody, "description": "An access and a refresh token"},
                **error_responses(),
            },
            openapi_extra={"requestBody": grant_body(), "parameters": [proof_header()]},
        )
        login.security_schemes[PASSWORD_SCHEME] = PasswordFlowScheme(self.route_name, path)

    def start(self, issue_token_service: object, global_flow: RefreshFlow | None) -> None:
        """At the login's startup: the refresh registration of its tokens, without cookies."""
        if isinstance(issue_token_service, LoginIssueTokenService):
            flow: RefreshFlow | None = issue_token_service.flow
        else:
            flow = global_flow
        name = f"{self.login.name}: token_path={self.path!r}"
        if flow is None:
            raise ConfigurationError(
                f"{name} needs AuthRefreshModule.for_root(...) attached to the same application "
                "(its refresh_token grant rotates through it)"
            )
        if flow.container.settings().cookie_transport:
            raise ConfigurationError(
                f"{name} answers refresh tokens in the body, which cookie transport "
                f"(AUTH_REFRESH_COOKIE_TRANSPORT) of {flow.name} keeps out of the page's "
                "reach; serve the token endpoint from an application without cookie transport"
            )
        self.flow = flow

    async def token(self, request: Request) -> Response:
        try:
            # A refusal leaves the span as the library's error it is (its errorCode).
            with operation_span("token"):
                return await self._grant(request)
        except GrantError as error:
            return error.response()
        except AuthRefreshError as error:
            return GrantError.from_walk(error).response()

    async def _grant(self, request: Request) -> Response:
        login = self.login
        if not login.started:
            await start_late(login, request.app)
        _refuse_client_authentication(request.headers.get("authorization"))
        fields = await _form(request)
        if _parameter(fields, "client_secret") is not None:
            raise GrantError("invalid_client", "No client authenticates here", 401, _CHALLENGE)
        grant_type = _parameter(fields, "grant_type")
        if grant_type is None:
            raise GrantError("invalid_request", "grant_type is required")
        if _parameter(fields, "scope") is not None:
            raise GrantError("invalid_scope", "This server issues no scopes")
        if grant_type == "password":
            return await self._password_grant(request, fields)
        if grant_type == "refresh_token":
            return await self._refresh_grant(request, fields)
        raise GrantError("unsupported_grant_type", "grant_type is password or refresh_token")

    async def _password_grant(self, request: Request, fields: Mapping[str, Any]) -> Response:
        login = self.login
        pair = await login.login_pair(request, lambda: _given(fields))
        issuer = login.issue_token_service
        if isinstance(issuer, LoginIssueTokenService):
            issuer = issuer.flow.container.issuer()
        return _token_response(pair, issuer, fresh=True)

    async def _refresh_grant(self, request: Request, fields: Mapping[str, Any]) -> Response:
        token = _parameter(fields, "refresh_token")
        if token is None:
            raise GrantError("invalid_request", "refresh_token is required")
        flow = self.flow
        assert flow is not None  # set at the login's startup
        refreshed = await flow.refresh(request, token=token)
        assert refreshed.issued is not None  # asked for
        # A repeat within the grace window has no expiry at hand: its token tells.
        fresh = refreshed.issued.expires_at is not None
        return _token_response(refreshed.issued.pair, flow.container.issuer(), fresh=fresh)


_CHALLENGE = {"WWW-Authenticate": CHALLENGE}


def _refuse_client_authentication(authorization: str | None) -> None:
    # A public client may name itself with Basic and an empty password (Swagger UI does, by
    # default); any secret, or another scheme, is client authentication no client here has.
    if authorization is None:
        return
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = b64decode(credentials.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        _, colon, secret = decoded.partition(":")
        if colon and not secret:
            return
    raise GrantError("invalid_client", "No client authenticates here", 401, _CHALLENGE)


async def _form(request: Request) -> Mapping[str, Any]:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != FORM:
        raise GrantError("invalid_request", f"Send the parameters as {FORM}")
    fields = await read_body_fields(request)
    assert fields is not None  # a form
    return fields


def _parameter(fields: Mapping[str, Any], name: str) -> str | None:
    # §3.2: a parameter sent without a value is omitted; one sent twice is refused.
    value = single_field(fields, name)
    return value if isinstance(value, str) and value else None


async def _given(fields: Mapping[str, Any]) -> Mapping[str, Any]:
    return fields


def _token_response(pair: TokenPair, issuer: object, *, fresh: bool) -> Response:
    body: dict[str, Any] = {
        "access_token": pair["accessToken"],
        "token_type": pair.get("tokenType", "Bearer"),
        "refresh_token": pair["refreshToken"],
    }
    lifetime = _expires_in(pair["accessToken"], issuer, fresh=fresh)
    if lifetime is not None:
        body["expires_in"] = lifetime
    return JSONResponse(body, headers=NO_STORE)


def _expires_in(access_token: str, issuer: object, *, fresh: bool) -> int | None:
    # The default issuer's lifetime, for a token it has just signed; else what the token says.
    if (
        fresh
        and isinstance(issuer, IssueTokenService)
        and type(issuer).access_token is IssueTokenService.access_token
    ):
        return issuer.jwt_service.settings.access_expires_in
    expires_at = unverified_claims(access_token).get("exp")
    if not isinstance(expires_at, int | float) or isinstance(expires_at, bool):
        return None
    return max(0, int(expires_at - time.time()))
