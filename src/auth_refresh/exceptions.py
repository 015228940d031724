"""Errors raised by auth-refresh.

Every error has an HTTP status, a machine-readable ``error_code`` and a message that names no
internals and never contains a token or a password. The hierarchy:

* AuthRefreshError
  + ConfigurationError
  + InvalidRequestError
  |  + RequestTooLargeError
  + UnauthorizedError
  |  + AuthRefreshUnauthorizedError
  |  |  + MissingTokenError
  |  |  + InvalidTokenError
  |  + AuthJwtUnauthorizedError
  |  + DpopError
  |  |  + InvalidDpopProofError
  |  |  + DpopNonceError
  |  |  + DpopBindingError
  |  + AuthLocalInvalidCredentialsError
  + CsrfError
  + SessionNotFoundError
  + TooManyRequestsError
  |  + AuthLocalTooManyLoginsError
  + UnavailableError
     + StoreUnavailableError
     + AuthLocalBusyError
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AuthJwtUnauthorizedError",
    "AuthLocalBusyError",
    "AuthLocalInvalidCredentialsError",
    "AuthLocalTooManyLoginsError",
    "AuthRefreshError",
    "AuthRefreshUnauthorizedError",
    "ConfigurationError",
    "CsrfError",
    "DpopBindingError",
    "DpopError",
    "DpopNonceError",
    "InvalidDpopProofError",
    "InvalidRequestError",
    "InvalidTokenError",
    "MissingTokenError",
    "RequestTooLargeError",
    "SessionNotFoundError",
    "StoreUnavailableError",
    "TooManyRequestsError",
    "UnauthorizedError",
    "UnavailableError",
]


class AuthRefreshError(Exception):
    """Base class of every error this library raises."""

    status_code: ClassVar[int] = 500
    error_code: ClassVar[str] = "AUTH_REFRESH_ERROR"
    default_message: ClassVar[str] = "Internal authentication error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)

    @property
    def headers(self) -> dict[str, str]:
        return {}


class ConfigurationError(AuthRefreshError):
    """A module was registered with missing or invalid options; raised at startup."""

    default_message = "Invalid auth-refresh configuration"


class InvalidRequestError(AuthRefreshError):
    """The request itself is malformed (RFC 6750 ``invalid_request``)."""

    status_code = 400
    error_code = "AUTH_REFRESH_INVALID_REQUEST_ERROR"
    default_message = "Malformed request"


class RequestTooLargeError(InvalidRequestError):
    """The request body is larger than the library reads (RFC 9110 §15.5.14)."""

    status_code = 413
    error_code = "AUTH_REFRESH_REQUEST_TOO_LARGE_ERROR"
    default_message = "The request body is too large"


class UnauthorizedError(AuthRefreshError):
    """The request carries no acceptable credentials."""

    status_code = 401
    error_code = "AUTH_REFRESH_NOT_AUTHORIZED_ERROR"
    default_message = "Unauthorized"
    token_sent: bool = True

    def __init__(self, message: str | None = None, *, token_sent: bool | None = None) -> None:
        super().__init__(message)
        if token_sent is not None:
            self.token_sent = token_sent

    @property
    def headers(self) -> dict[str, str]:
        # RFC 6750 §3.1: a request without credentials gets a challenge without an error code.
        if self.token_sent:
            return {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        return {"WWW-Authenticate": "Bearer"}


class AuthRefreshUnauthorizedError(UnauthorizedError):
    """A refresh attempt was refused."""

    default_message = "Unauthorized refresh attempt"


class MissingTokenError(AuthRefreshUnauthorizedError):
    """No refresh token was found in the request."""

    token_sent = False


class InvalidTokenError(AuthRefreshUnauthorizedError):
    """The token is malformed, forged, expired, of the wrong type or names no user."""

    def __init__(self, message: str | None = None, *, reason: str = "invalid") -> None:
        super().__init__(message)
        # For logs and tests only: the response never says why a token was refused.
        self.reason = reason


class AuthJwtUnauthorizedError(UnauthorizedError):
    """An access-token-guarded route was called without a valid access token."""

    error_code = "AUTH_JWT_NOT_AUTHORIZED_ERROR"
    default_message = "Unauthorized access attempt"
    # Where DPoP is on, the guard names the proof algorithms (challenge_dpop): the challenge is
    # then DPoP's too, or DPoP's alone where it is required (RFC 9449 §7.1 and §7.2).
    dpop_algorithms: tuple[str, ...] = ()
    bearer_accepted: bool = True

    def challenge_dpop(self, algorithms: tuple[str, ...], *, bearer_accepted: bool) -> None:
        """Challenge with the ``DPoP`` scheme of ``algorithms``, beside ``Bearer`` if accepted."""
        self.dpop_algorithms = algorithms
        self.bearer_accepted = bearer_accepted

    @property
    def headers(self) -> dict[str, str]:
        bearer = super().headers
        if not self.dpop_algorithms:
            return bearer
        error = 'error="invalid_token", ' if self.token_sent else ""
        dpop = f'DPoP {error}algs="{" ".join(self.dpop_algorithms)}"'
        # Several challenges share one header, comma-separated (RFC 9110 §11.6.1).
        return {
            "WWW-Authenticate": f"{bearer['WWW-Authenticate']}, {dpop}"
            if self.bearer_accepted
            else dpop
        }


class DpopError(UnauthorizedError):
    """A DPoP check failed (RFC 9449); the challenge names the proof algorithms (§7.1)."""

    error_code = "AUTH_REFRESH_DPOP_ERROR"
    default_message = "Invalid DPoP request"
    challenge_error: ClassVar[str] = "invalid_dpop_proof"

    def __init__(
        self,
        message: str | None = None,
        *,
        algorithms: tuple[str, ...] = (),
        reason: str = "invalid",
        token_sent: bool | None = None,
    ) -> None:
        super().__init__(message, token_sent=token_sent)
        self.algorithms = algorithms
        # For logs and tests only, as InvalidTokenError's.
        self.reason = reason

    @property
    def headers(self) -> dict[str, str]:
        algs = f'algs="{" ".join(self.algorithms)}"'
        if not self.token_sent:
            return {"WWW-Authenticate": f"DPoP {algs}"}
        return {"WWW-Authenticate": f'DPoP error="{self.challenge_error}", {algs}'}


class InvalidDpopProofError(DpopError):
    """The ``DPoP`` proof is missing, malformed, replayed, too old, or for another request."""

    error_code = "AUTH_REFRESH_INVALID_DPOP_PROOF_ERROR"
    default_message = "Missing or invalid DPoP proof"


class DpopNonceError(DpopError):
    """The proof must carry the server's nonce (§8): retry with the ``DPoP-Nonce`` header's."""

    error_code = "AUTH_REFRESH_DPOP_NONCE_ERROR"
    default_message = "Send a DPoP proof with the server's nonce"
    challenge_error = "use_dpop_nonce"

    def __init__(self, nonce: str, *, algorithms: tuple[str, ...] = ()) -> None:
        super().__init__(algorithms=algorithms, reason="nonce")
        self.nonce = nonce

    @property
    def headers(self) -> dict[str, str]:
        return {**super().headers, "DPoP-Nonce": self.nonce}


class DpopBindingError(DpopError):
    """A DPoP-bound token (``cnf.jkt``) came without a proof of its key, or as ``Bearer``."""

    error_code = "AUTH_REFRESH_DPOP_BINDING_ERROR"
    default_message = "The token is bound to another DPoP key"
    challenge_error = "invalid_token"


class AuthLocalInvalidCredentialsError(UnauthorizedError):
    """A login gave an unknown username or a wrong password."""

    error_code = "AUTH_LOCAL_INVALID_CREDENTIALS_ERROR"
    default_message = "Invalid username or password"
    token_sent = False


class CsrfError(AuthRefreshError):
    """A refresh token came from the cookie without the matching CSRF token header."""

    status_code = 403
    error_code = "AUTH_REFRESH_CSRF_ERROR"
    default_message = "Missing or invalid CSRF token"


class SessionNotFoundError(AuthRefreshError):
    """The session id is not one of the caller's live sessions (another user's included)."""

    status_code = 404
    error_code = "AUTH_REFRESH_SESSION_NOT_FOUND_ERROR"
    default_message = "No such session"


class TooManyRequestsError(AuthRefreshError):
    """This client asks too much at once (429): it may retry after ``Retry-After`` seconds."""

    status_code = 429
    error_code = "AUTH_REFRESH_TOO_MANY_REQUESTS_ERROR"
    default_message = "Too many requests; retry shortly"
    retry_after_seconds: ClassVar[int] = 1

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}


class AuthLocalTooManyLoginsError(TooManyRequestsError):
    """This client address, or this username, has its share of logins in progress already."""

    error_code = "AUTH_LOCAL_TOO_MANY_LOGINS_ERROR"
    default_message = "Too many logins in progress; retry shortly"


class UnavailableError(AuthRefreshError):
    """Nothing was done for now (503): the client may retry after ``Retry-After`` seconds."""

    status_code = 503
    error_code = "AUTH_REFRESH_UNAVAILABLE_ERROR"
    default_message = "Unavailable; retry shortly"
    retry_after_seconds: ClassVar[int] = 1

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}


class StoreUnavailableError(UnavailableError):
    """The refresh-token store did not answer in time; nothing was issued, the client may retry."""

    error_code = "AUTH_REFRESH_STORE_UNAVAILABLE_ERROR"
    default_message = "The token store is unavailable; retry shortly"


class AuthLocalBusyError(UnavailableError):
    """Too many logins were checking passwords at once; this one was not checked: retry."""

    error_code = "AUTH_LOCAL_BUSY_ERROR"
    default_message = "Too many logins at once; retry shortly"
